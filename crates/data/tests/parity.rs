//! Augmentation + normalization against PyTorch (scripts/pytorch/data_fixtures.py): zero padding
//! of the u8 image, crop, flip, ToTensor, Normalize with CIFAR-10's statistics.

use explr_data::{CropFlip, Normalize, NormalizeTable, IMAGE_BYTES};

#[test]
fn augmentation_matches_pytorch() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/data_reference.safetensors"
    ))
    .unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let torch = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("torch_version"))
        .cloned();
    assert!(
        torch.is_some_and(|v| v.starts_with('2')),
        "fixture records its torch version"
    );
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let images = st.tensor("images").unwrap().data().to_vec();
    let ints = |name: &str| -> Vec<i64> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let f64s: Vec<f64> = st
        .tensor("aug_f64")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let f32s: Vec<f32> = st
        .tensor("aug_f32")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let crops = ints("crops");
    let t64 = NormalizeTable::<f64>::new(&Normalize::CIFAR10);
    let t32 = NormalizeTable::<f32>::new(&Normalize::CIFAR10);
    let mut worst = (0f64, 0f64);
    for (k, row) in crops.chunks_exact(4).enumerate() {
        let (i, dx, dy, flip) = (
            row[0] as usize,
            row[1] as usize,
            row[2] as usize,
            row[3] == 1,
        );
        let crop = CropFlip {
            padding: 4,
            dx,
            dy,
            flip,
        };
        let src = &images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES];
        let (mut o64, mut o32) = (vec![0f64; IMAGE_BYTES], vec![0f32; IMAGE_BYTES]);
        t64.transform(src, crop, &mut o64);
        t32.transform(src, crop, &mut o32);
        let r64 = &f64s[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES];
        let r32 = &f32s[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES];
        for j in 0..IMAGE_BYTES {
            let e64 = (o64[j] - r64[j]).abs() / r64[j].abs().max(1e-3);
            let e32 = f64::from((o32[j] - r32[j]).abs()) / f64::from(r32[j].abs()).max(1.0);
            assert!(
                e64 <= 1e-12,
                "case {k} value {j}: f64 {} vs torch {}",
                o64[j],
                r64[j]
            );
            assert!(
                e32 <= 1e-6,
                "case {k} value {j}: f32 {} vs torch {}",
                o32[j],
                r32[j]
            );
            worst = (worst.0.max(e64), worst.1.max(e32));
        }
    }
    assert_eq!(crops.len() / 4, 7);
    // Tolerances: f64 1e-12 relative (same operations as torch); f32 1e-6 relative to
    // max(|x|, 1), a few f32 ulps (torch rounds at each f32 step, we round the f64 result once).
    assert!(worst.0 <= 1e-12 && worst.1 <= 1e-6, "{worst:?}");
}
