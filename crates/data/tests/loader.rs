//! Loader: batching, seeded shuffle, resumability, augmentation, dtypes, errors.

use candle_core::{DType, Device};
use explr_data::{
    load_synthetic, Augment, CropFlip, DataError, Loader, LoaderConfig, Normalize, NormalizeTable,
    Split, SyntheticConfig, IMAGE_BYTES,
};

fn small() -> explr_data::Dataset {
    load_synthetic(&SyntheticConfig {
        seed: 3,
        train_size: 300,
        test_size: 40,
        ..Default::default()
    })
    .unwrap()
}

fn zeros(n: usize) -> Split {
    Split::new(vec![0; n * IMAGE_BYTES], vec![0; n]).unwrap()
}

#[test]
fn steps_per_epoch() {
    let check = |n: usize, batch: usize, drop_last: bool, want: usize| {
        let cfg = LoaderConfig {
            drop_last,
            ..LoaderConfig::train(batch, 0)
        };
        let loader = Loader::new(&zeros(n), cfg, &Device::Cpu).unwrap();
        assert_eq!(
            loader.steps_per_epoch(),
            want,
            "n={n} batch={batch} drop_last={drop_last}"
        );
    };
    check(50_000, 128, false, 391);
    check(50_000, 128, true, 390);
    check(10, 5, false, 2);
    check(10, 5, true, 2);
    check(10, 3, false, 4);
    check(10, 3, true, 3);
    check(2, 5, false, 1);
    check(2, 5, true, 0);
}

#[test]
fn an_epoch_visits_every_image_once_keeping_the_partial_batch() {
    let data = small();
    let loader = Loader::new(data.train(), LoaderConfig::train(128, 1), &Device::Cpu).unwrap();
    let batches: Vec<_> = loader.epoch(0).map(Result::unwrap).collect();
    assert_eq!(
        batches.iter().map(|b| b.indices.len()).collect::<Vec<_>>(),
        [128, 128, 44]
    );
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_ne!(seen, (0..300).collect::<Vec<_>>(), "shuffled");
    seen.sort();
    assert_eq!(seen, (0..300).collect::<Vec<_>>());
    for b in &batches {
        assert_eq!(b.images.dims(), [b.indices.len(), 3, 32, 32]);
        assert_eq!(b.images.dtype(), DType::F32);
        assert_eq!(b.labels.dtype(), DType::U32);
        let labels: Vec<u32> = b.labels.to_vec1().unwrap();
        let want: Vec<u32> = b.indices.iter().map(|&i| data.train().label(i)).collect();
        assert_eq!(labels, want);
    }
}

#[test]
fn order_is_a_pure_function_of_seed_and_epoch() {
    let data = small();
    let mk = |seed| Loader::new(data.train(), LoaderConfig::train(64, seed), &Device::Cpu).unwrap();
    let (a, b, c) = (mk(5), mk(5), mk(6));
    assert_eq!(a.epoch_order(0), b.epoch_order(0));
    assert_eq!(a.epoch_order(7), b.epoch_order(7));
    assert_ne!(a.epoch_order(0), a.epoch_order(1));
    assert_ne!(a.epoch_order(0), c.epoch_order(0));
    let from_batches: Vec<usize> = a.epoch(2).flat_map(|r| r.unwrap().indices).collect();
    assert_eq!(from_batches, a.epoch_order(2));
    let unshuffled = Loader::new(data.train(), LoaderConfig::eval(64), &Device::Cpu).unwrap();
    assert_eq!(unshuffled.epoch_order(4), (0..300).collect::<Vec<_>>());
}

/// The seed decides the order and the augmentation of every epoch, not only the first: two
/// seeds visit the images in different orders, and crop and flip them differently, in each of
/// 40 epochs (a loader that fell back to a fixed stream after epoch 0 fails here), while the
/// same seed replays them.
#[test]
fn different_seeds_give_different_orders_and_draws_in_every_epoch() {
    let data = small();
    let mk = |seed| {
        let config = LoaderConfig::train(64, seed);
        assert!(config.augment.is_some(), "training batches are augmented");
        Loader::new(data.train(), config, &Device::Cpu).unwrap()
    };
    let (a, again, b) = (mk(5), mk(5), mk(6));
    for epoch in 0..40 {
        assert_eq!(a.epoch_order(epoch), again.epoch_order(epoch), "{epoch}");
        assert_ne!(
            a.epoch_order(epoch),
            b.epoch_order(epoch),
            "seeds 5 and 6 visit the images in the same order in epoch {epoch}"
        );
        let draws = |l: &Loader| (0..300).map(|i| l.crop_flip(epoch, i)).collect::<Vec<_>>();
        assert_eq!(draws(&a), draws(&again), "{epoch}");
        assert_ne!(
            draws(&a),
            draws(&b),
            "seeds 5 and 6 augment every image alike in epoch {epoch}"
        );
    }
}

/// A run resumed at epoch 3 sees exactly the batches (order and augmentation) of the original.
#[test]
fn multistep_resume_replays_the_same_epoch() {
    let data = small();
    let original = Loader::new(data.train(), LoaderConfig::train(100, 9), &Device::Cpu).unwrap();
    for e in 0..3 {
        assert_eq!(original.epoch(e).count(), 3);
    }
    let epoch3: Vec<Vec<f32>> = original
        .epoch(3)
        .map(|b| b.unwrap().images.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    let resumed = Loader::new(data.train(), LoaderConfig::train(100, 9), &Device::Cpu).unwrap();
    let again: Vec<Vec<f32>> = resumed
        .epoch(3)
        .map(|b| b.unwrap().images.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    assert_eq!(epoch3, again);
    let epoch4: Vec<f32> = resumed
        .epoch(4)
        .next()
        .unwrap()
        .unwrap()
        .images
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_ne!(epoch3[0], epoch4);
}

#[test]
fn batches_hold_the_transform_of_each_image() {
    let data = small();
    for dtype in [DType::F32, DType::F64] {
        let loader = Loader::new(
            data.train(),
            LoaderConfig::train(50, 2).with_dtype(dtype),
            &Device::Cpu,
        )
        .unwrap();
        let batch = loader.epoch(1).nth(1).unwrap().unwrap();
        assert_eq!(batch.images.dtype(), dtype);
        let got: Vec<f64> = batch
            .images
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let table = NormalizeTable::<f64>::new(&Normalize::CIFAR10);
        for (row, &i) in batch.indices.iter().enumerate() {
            let mut want = vec![0f64; IMAGE_BYTES];
            table.transform(data.train().image(i), loader.crop_flip(1, i), &mut want);
            let got = &got[row * IMAGE_BYTES..(row + 1) * IMAGE_BYTES];
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                    "{dtype:?} image {i}: {g} vs {w}"
                );
            }
        }
        let sync = loader.batch_of(1, &batch.indices).unwrap();
        let sync: Vec<f64> = sync
            .images
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(sync, got, "prefetched and synchronous batches agree");
    }
}

#[test]
fn eval_batches_are_the_normalized_pixels_in_order() {
    let data = small();
    let norm = Normalize {
        mean: [0.5, 0.25, 0.125],
        std: [0.5, 2.0, 1.0],
    };
    let cfg = LoaderConfig {
        normalize: norm,
        ..LoaderConfig::eval(16)
    }
    .with_dtype(DType::F64);
    let loader = Loader::new(data.test(), cfg, &Device::Cpu).unwrap();
    let batches: Vec<_> = loader.epoch(0).map(Result::unwrap).collect();
    assert_eq!(batches.len(), 3);
    let b = &batches[2];
    assert_eq!(b.indices, (32..40).collect::<Vec<_>>());
    let got: Vec<f64> = b.images.flatten_all().unwrap().to_vec1().unwrap();
    let img = data.test().image(35);
    for (c, y, x) in [(0, 0, 0), (1, 5, 9), (2, 31, 31)] {
        let v = f64::from(img[c * 1024 + y * 32 + x]);
        let want = (v / 255.0 - norm.mean[c]) / norm.std[c];
        assert_eq!(got[3 * IMAGE_BYTES + c * 1024 + y * 32 + x], want);
    }
}

#[test]
fn augmentation_draws_cover_all_crops_and_both_flips() {
    let a = Augment::STANDARD;
    let draws: Vec<CropFlip> = (0..2000).map(|i| a.draw(11, 0, i)).collect();
    for d in 0..=8 {
        assert!(
            draws.iter().any(|c| c.dx == d) && draws.iter().any(|c| c.dy == d),
            "offset {d}"
        );
    }
    let flips = draws.iter().filter(|c| c.flip).count();
    assert!((850..1150).contains(&flips), "{flips} flips of 2000");
    assert_eq!(a.draw(11, 0, 5), a.draw(11, 0, 5));
    assert_ne!(
        (0..20).map(|i| a.draw(11, 0, i)).collect::<Vec<_>>(),
        (0..20).map(|i| a.draw(11, 1, i)).collect::<Vec<_>>()
    );
    let no_flip = Augment {
        padding: 4,
        hflip: false,
    };
    assert!((0..200).all(|i| !no_flip.draw(1, 0, i).flip));
}

#[test]
fn dropping_an_epoch_early_stops_the_prefetch_thread() {
    let data = small();
    let loader = Loader::new(
        data.train(),
        LoaderConfig {
            prefetch: 1,
            ..LoaderConfig::train(10, 0)
        },
        &Device::Cpu,
    )
    .unwrap();
    let mut it = loader.epoch(0);
    assert_eq!(it.len(), 30);
    assert!(it.next().unwrap().is_ok());
    drop(it); // must return, not hang on the blocked sender
    assert_eq!(loader.epoch(0).count(), 30);
}

#[test]
fn invalid_configs_are_errors() {
    let split = zeros(4);
    let check = |cfg: LoaderConfig, field: &str| match Loader::new(&split, cfg, &Device::Cpu) {
        Err(DataError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
        other => panic!("{field}: expected InvalidConfig, got {other:?}"),
    };
    let base = LoaderConfig::train(2, 0);
    check(
        LoaderConfig {
            batch_size: 0,
            ..base.clone()
        },
        "batch_size",
    );
    check(
        LoaderConfig {
            prefetch: 0,
            ..base.clone()
        },
        "prefetch",
    );
    check(base.clone().with_dtype(DType::U8), "dtype");
    check(
        LoaderConfig {
            normalize: Normalize {
                mean: [0.0; 3],
                std: [1.0, 0.0, 1.0],
            },
            ..base.clone()
        },
        "normalize.std",
    );
    check(
        LoaderConfig {
            normalize: Normalize {
                mean: [f64::NAN, 0.0, 0.0],
                std: [1.0; 3],
            },
            ..base.clone()
        },
        "normalize.mean",
    );
    check(
        LoaderConfig {
            augment: Some(Augment {
                padding: 33,
                hflip: true,
            }),
            ..base.clone()
        },
        "augment.padding",
    );
    assert!(matches!(
        Split::new(vec![0; 10], vec![0]),
        Err(DataError::InvalidConfig {
            field: "images.len()",
            ..
        })
    ));
}
