//! `explr_nn::relu` against candle's `Tensor::relu`: values and gradients in f32 and f64, the
//! gradient rule at 0 (PyTorch's: none), NaN, and non-contiguous input; `explr_nn::add` against
//! `Tensor::add`; autograd's sum of a tensor's gradients.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Random values in (−1, 1), none exactly 0, on a shape large enough for several chunks.
fn random(dtype: DType, seed: u64) -> Var {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f64> = (0..3 * 5 * 67 * 71)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let t = Tensor::from_vec(v, (3, 5, 67, 71), &Device::Cpu).unwrap();
    Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn matches_candle_relu_values_and_gradients() {
    for (dtype, seed) in [(DType::F32, 1), (DType::F64, 2)] {
        let x = random(dtype, seed);
        // A non-trivial upstream gradient: d(Σ y·g)/dx = g · [x > 0].
        let g = random(dtype, seed + 10).as_tensor().clone();
        let ours = explr_nn::relu(x.as_tensor()).unwrap();
        let theirs = x.as_tensor().relu().unwrap();
        assert_eq!(values(&ours), values(&theirs), "{dtype:?} forward");
        let dx_ours = (&ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let dx_theirs = (&theirs * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (dx_ours.get(&x).unwrap(), dx_theirs.get(&x).unwrap());
        assert_eq!(a.dtype(), dtype);
        assert_eq!(values(a), values(b), "{dtype:?} gradient");
        assert!(values(a).contains(&0.0) && values(a).iter().any(|v| *v != 0.0));
    }
}

#[test]
fn no_gradient_at_zero_and_nan_propagates() {
    let x = Var::new(&[-2.0f32, -0.0, 0.0, 3.0, f32::NAN], &Device::Cpu).unwrap();
    let y = explr_nn::relu(x.as_tensor()).unwrap();
    let v = y.to_vec1::<f32>().unwrap();
    assert_eq!(&v[..4], &[0.0, 0.0, 0.0, 3.0]);
    assert!(
        v[4].is_nan(),
        "relu(NaN) must stay NaN so that training notices it"
    );
    let grads = y.sum_all().unwrap().backward().unwrap();
    let dx = grads.get(&x).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(dx, [0.0, 0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn accepts_non_contiguous_input() {
    let x = random(DType::F64, 3);
    let xt = x.as_tensor().transpose(1, 3).unwrap();
    assert!(!xt.is_contiguous());
    let ours = explr_nn::relu(&xt).unwrap();
    assert_eq!(values(&ours), values(&xt.relu().unwrap()));
    let grads = ours.sum_all().unwrap().backward().unwrap();
    let expected: Vec<f64> = values(x.as_tensor())
        .iter()
        .map(|v| if *v > 0.0 { 1.0 } else { 0.0 })
        .collect();
    assert_eq!(values(grads.get(&x).unwrap()), expected);
}

#[test]
fn other_dtypes_fall_back_to_candle() {
    let x = Tensor::new(&[-1.0f32, 2.0], &Device::Cpu)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    let y = explr_nn::relu(&x).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    assert_eq!(values(&y), [0.0, 2.0]);
}

/// The parallel residual sum is `Tensor::add` bit for bit, hands the upstream gradient to both
/// inputs, takes non-contiguous input, and refuses shapes that differ as `Tensor::add` does.
#[test]
fn add_matches_candle_add_values_and_gradients() {
    for (dtype, seed) in [(DType::F32, 3), (DType::F64, 4)] {
        let (a, b) = (random(dtype, seed), random(dtype, seed + 1));
        let g = random(dtype, seed + 2).as_tensor().clone();
        let ours = explr_nn::add(a.as_tensor(), b.as_tensor()).unwrap();
        let theirs = a.as_tensor().add(b.as_tensor()).unwrap();
        assert_eq!(values(&ours), values(&theirs), "{dtype:?} forward");
        let grads = (&ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("a", &a), ("b", &b)] {
            let d = grads.get(v.as_tensor()).unwrap();
            assert_eq!(values(d), values(&g), "{dtype:?} gradient of {name}");
        }
        let t = a.as_tensor().transpose(2, 3).unwrap();
        let sum = explr_nn::add(&t, &t).unwrap();
        assert_eq!(
            values(&sum),
            values(&(&t + &t).unwrap()),
            "{dtype:?} transposed"
        );
    }
    let a = random(DType::F32, 5);
    let other = Tensor::zeros((3, 5, 71, 67), DType::F32, &Device::Cpu).unwrap();
    let err = explr_nn::add(a.as_tensor(), &other)
        .unwrap_err()
        .to_string();
    assert!(err.contains("shape mismatch"), "{err}");
}

/// A tensor used twice gets the sum of its two gradients. autograd's accumulation (which the
/// vendored candle-core runs on Rayon's pool for large tensors, vendor/README.md) must give
/// `g·h + g` bit for bit for `z = x·h + x` and upstream gradient `g`, on one thread and on two.
#[test]
fn accumulated_gradients_are_the_exact_sum_on_any_pool() {
    for (dtype, seed) in [(DType::F32, 7), (DType::F64, 8)] {
        let x = random(dtype, seed);
        // Plain tensors, not variables: a gradient computed from a variable records an op, and
        // autograd then sums it with candle's own add.
        let h = random(dtype, seed + 100).as_detached_tensor();
        let g = random(dtype, seed + 200).as_detached_tensor();
        let expected: Vec<f64> = match dtype {
            DType::F32 => {
                let (g, h) = (g.flatten_all().unwrap(), h.flatten_all().unwrap());
                let (g, h) = (g.to_vec1::<f32>().unwrap(), h.to_vec1::<f32>().unwrap());
                g.iter().zip(&h).map(|(g, h)| (g * h + g) as f64).collect()
            }
            _ => {
                let (g, h) = (values(&g), values(&h));
                g.iter().zip(&h).map(|(g, h)| g * h + g).collect()
            }
        };
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let grad = pool.install(|| {
                let z = explr_nn::add(&x.as_tensor().mul(&h).unwrap(), x.as_tensor()).unwrap();
                let grads = (z * &g).unwrap().sum_all().unwrap().backward().unwrap();
                grads.get(&x).expect("x has a gradient").clone()
            });
            assert_eq!(values(&grad), expected, "{dtype:?}, {threads} thread(s)");
        }
    }
}
