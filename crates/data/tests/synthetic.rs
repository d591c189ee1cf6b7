//! The synthetic twin: determinism, balance, structure; and the preview grid.

use explr_data::{
    load_synthetic, preview_png, preview_rgb, DataError, SyntheticConfig, IMAGE_BYTES,
};

fn cfg(seed: u64, train: usize, test: usize) -> SyntheticConfig {
    SyntheticConfig {
        seed,
        train_size: train,
        test_size: test,
        ..Default::default()
    }
}

#[test]
fn same_seed_same_bytes_and_images_depend_only_on_their_index() {
    let a = load_synthetic(&cfg(1, 200, 50)).unwrap();
    let b = load_synthetic(&cfg(1, 200, 50)).unwrap();
    assert_eq!(a.train().images(), b.train().images());
    assert_eq!(a.train().labels(), b.train().labels());
    assert_eq!(a.test().images(), b.test().images());
    let longer = load_synthetic(&cfg(1, 300, 10)).unwrap();
    assert_eq!(
        &longer.train().images()[..200 * IMAGE_BYTES],
        a.train().images()
    );
    assert_eq!(
        &longer.test().images()[..10 * IMAGE_BYTES],
        &a.test().images()[..10 * IMAGE_BYTES]
    );
    let other = load_synthetic(&cfg(2, 200, 50)).unwrap();
    assert_ne!(other.train().images(), a.train().images());
    assert_ne!(a.train().image(0), a.test().image(0));
    assert_eq!(a.num_classes(), 10);
    assert_eq!(a.class_names()[3], "shape3");
}

#[test]
fn classes_are_balanced_and_pixels_use_the_range() {
    let d = load_synthetic(&cfg(0, 3000, 10)).unwrap();
    let mut counts = [0usize; 10];
    for &l in d.train().labels() {
        counts[l as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| (200..400).contains(&c)),
        "{counts:?}"
    );
    let px = d.train().images();
    let (lo, hi) = (
        px.iter().filter(|&&v| v < 48).count(),
        px.iter().filter(|&&v| v > 207).count(),
    );
    assert!(
        lo > px.len() / 500 && hi > px.len() / 500,
        "dark {lo}, bright {hi} of {}",
        px.len()
    );
    let means = d.train().channel_means();
    assert!(means.iter().all(|m| (0.3..0.7).contains(m)), "{means:?}");
}

/// The class signal sits in the shape, not in the average colour: a nearest-class-mean
/// classifier on mean RGB is well below what a convnet reaches (see the crate README).
#[test]
fn mean_colour_alone_is_a_weak_classifier() {
    let d = load_synthetic(&cfg(4, 2000, 1000)).unwrap();
    let feat = |s: &explr_data::Split, i: usize| -> [f64; 3] {
        let img = s.image(i);
        std::array::from_fn(|c| {
            img[c * 1024..(c + 1) * 1024]
                .iter()
                .map(|&v| f64::from(v))
                .sum::<f64>()
                / 1024.0
        })
    };
    let mut sums = [[0f64; 3]; 10];
    let mut n = [0f64; 10];
    for i in 0..d.train().len() {
        let (l, f) = (d.train().label(i) as usize, feat(d.train(), i));
        n[l] += 1.0;
        (0..3).for_each(|c| sums[l][c] += f[c]);
    }
    let centroids: Vec<[f64; 3]> = (0..10).map(|k| sums[k].map(|s| s / n[k])).collect();
    let correct = (0..d.test().len())
        .filter(|&i| {
            let f = feat(d.test(), i);
            let dist = |c: &[f64; 3]| (0..3).map(|j| (c[j] - f[j]).powi(2)).sum::<f64>();
            let best = (0..10)
                .min_by(|&a, &b| dist(&centroids[a]).total_cmp(&dist(&centroids[b])))
                .unwrap();
            best as u32 == d.test().label(i)
        })
        .count();
    let acc = correct as f64 / d.test().len() as f64;
    assert!(acc < 0.3, "mean-colour accuracy {acc}");
}

#[test]
fn invalid_synthetic_configs_are_errors() {
    let check = |c: SyntheticConfig, field: &str| match load_synthetic(&c) {
        Err(DataError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
        other => panic!("{field}: {other:?}"),
    };
    check(
        SyntheticConfig {
            num_classes: 1,
            ..cfg(0, 10, 10)
        },
        "synthetic.num_classes",
    );
    check(
        SyntheticConfig {
            noise: 1.5,
            ..cfg(0, 10, 10)
        },
        "synthetic.noise",
    );
    check(cfg(0, 0, 10), "synthetic.train_size");
}

#[test]
fn preview_grid_places_images_and_encodes_png() {
    let d = load_synthetic(&cfg(5, 20, 5)).unwrap();
    let (rgb, w, h) = preview_rgb(d.train(), d.class_names(), 10, 4).unwrap();
    // 4 columns of 70-pixel tiles, 3 rows of 81-pixel tiles (64 image + 11 caption + 2*3 margin).
    assert_eq!((w, h), (4 * 70, 3 * 81));
    assert_eq!(rgb.len(), w * h * 3);
    // Image 5 sits in row 1, column 1; its pixel (y=10, x=20) is shown 2x at margin 3.
    let img = d.train().image(5);
    let (py, px) = (81 + 3 + 2 * 10 + 1, 70 + 3 + 2 * 20 + 1);
    for c in 0..3 {
        assert_eq!(
            rgb[(py * w + px) * 3 + c],
            img[c * 1024 + 10 * 32 + 20],
            "channel {c}"
        );
    }
    let png = preview_png(d.train(), d.class_names(), 10, 4).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width as usize, info.height as usize), (w, h));
    assert_eq!(&buf[..info.buffer_size()], rgb.as_slice());
    assert!(matches!(
        preview_rgb(d.train(), d.class_names(), 10, 0),
        Err(DataError::InvalidConfig {
            field: "columns",
            ..
        })
    ));
}
