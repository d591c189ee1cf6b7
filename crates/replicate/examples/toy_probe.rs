use explr_replicate::toy::*;
fn main() {
    let cfg = ToyConfig {
        lr: 0.1,
        weight_decay: 0.01,
        steps: 25000,
        w0: vec![0.2, 1.0],
        dim: 2,
        batch_size: None,
        seed: 0,
        record_every: 1,
    };
    let t = run(&cfg, ToyVariant::BnWd).unwrap();
    let mut last = 0.0;
    for i in 1..t.step.len() {
        if t.error[i] > 0.05 && t.error[i - 1] <= 0.05 {
            println!(
                "jump at {} err {:.3} logn {:.3} minlogn since {:.3}",
                t.step[i], t.error[i], t.log_norm[i], last
            );
        }
        if t.error[i] < 0.01 {
            last = t.log_norm[i];
        }
    }
    let maxe = t.error[5000..].iter().cloned().fold(0.0, f64::max);
    println!("max err after 5000: {maxe}");
    let cfg2 = ToyConfig {
        batch_size: Some(32),
        dim: 10,
        w0: vec![0.2, 1.0],
        ..cfg.clone()
    };
    for v in ToyVariant::ALL {
        let t = run(&cfg2, v).unwrap();
        let n = t.error.len();
        let tail: f64 = t.error[n - 5000..].iter().sum::<f64>() / 5000.0;
        println!(
            "minibatch {:?} mean err last 5000 {:.4} logn {:.3}",
            v,
            tail,
            t.log_norm[n - 1]
        );
    }
}
