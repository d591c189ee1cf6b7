//! `explr_nn::conv2d` against candle's reference `Tensor::conv2d` and its autograd: output,
//! input gradient and weight gradient, on many shapes, strides, paddings and kernels, in f32
//! and f64. Test data comes from a seeded `ChaCha8Rng`.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{case, uniform, values, Case};
use explr_nn::{add, conv2d, conv2d_add, NnError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Normwise relative difference `max|a − b| / max|b|`.
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let (a, b) = (values(a), values(b));
    let scale = b
        .iter()
        .fold(0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let err = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    err / scale
}

/// Output and both gradients of `sum(conv(x, w) · r)` for a conv function.
fn run(
    conv: impl Fn(&Tensor, &Tensor) -> Tensor,
    x: &Tensor,
    w: &Tensor,
    r: &Tensor,
) -> (Tensor, Tensor, Tensor) {
    let xv = Var::from_tensor(x).unwrap();
    let wv = Var::from_tensor(w).unwrap();
    let y = conv(xv.as_tensor(), wv.as_tensor());
    let grads = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = grads.get(xv.as_tensor()).expect("input gradient").clone();
    let dw = grads.get(wv.as_tensor()).expect("weight gradient").clone();
    (y, dx, dw)
}

/// Output and both gradients of `sum(conv(x, w) · r)` from candle's own convolutions.
///
/// candle 0.11.1's autograd of `conv2d` derives the input gradient's output padding from the
/// height alone, so it fails whenever `(h + 2p − kh) mod s ≠ (w + 2p − kw) mod s` (shape
/// mismatch in add). This spells out the same formulas per dimension instead: the input
/// gradient is the uncropped `conv_transpose2d(dy, w)` cut to the input's rows and columns and
/// zero-extended where no output reads the input, the weight gradient candle's transposed
/// `conv2d`.
fn reference(c: Case, x: &Tensor, w: &Tensor, dy: &Tensor) -> (Tensor, Tensor, Tensor) {
    let y = x.conv2d(w, c.padding, c.stride, 1, 1).unwrap();
    // Full transposed convolution (no cropping): row t is padded-input row t, input row t − p.
    let full = dy.conv_transpose2d(w, 0, 0, c.stride, 1).unwrap();
    let (_, _, fh, fw) = full.dims4().unwrap();
    let (vh, vw) = ((c.h + c.padding).min(fh), (c.w + c.padding).min(fw));
    let dx = full
        .narrow(2, c.padding, vh - c.padding)
        .unwrap()
        .narrow(3, c.padding, vw - c.padding)
        .unwrap()
        .pad_with_zeros(2, 0, c.h + c.padding - vh)
        .unwrap()
        .pad_with_zeros(3, 0, c.w + c.padding - vw)
        .unwrap();
    let dw = x
        .transpose(0, 1)
        .unwrap()
        .conv2d(&dy.transpose(0, 1).unwrap(), c.padding, 1, c.stride, 1)
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .narrow(2, 0, c.kh)
        .unwrap()
        .narrow(3, 0, c.kw)
        .unwrap();
    (y, dx, dw)
}

/// candle's autograd, where it works, agrees with [`reference`]: evidence that the reference
/// is the gradient and not just another formula.
#[test]
fn reference_matches_candle_autograd_where_it_works() {
    for (c, seed) in [
        (case((2, 3, 7, 7), (4, 3, 3), 2, 1), 1),
        (case((2, 3, 6, 6), (4, 3, 3), 2, 1), 2),
        (case((2, 3, 5, 8), (4, 1, 1), 1, 0), 3),
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = uniform(&mut rng, &[c.n, c.c, c.h, c.w], DType::F64);
        let w = uniform(&mut rng, &[c.k, c.c, c.kh, c.kw], DType::F64);
        let r = uniform(&mut rng, &c.out_dims(), DType::F64);
        let auto = run(
            |x, w| x.conv2d(w, c.padding, c.stride, 1, 1).unwrap(),
            &x,
            &w,
            &r,
        );
        let explicit = reference(c, &x, &w, &r);
        assert!(
            rel_diff(&auto.1, &explicit.1) <= 1e-12,
            "input gradient of {c:?}"
        );
        assert!(
            rel_diff(&auto.2, &explicit.2) <= 1e-12,
            "weight gradient of {c:?}"
        );
    }
}

/// Checks output, input gradient and weight gradient against [`reference`] in `dtype`;
/// `transpose_input` feeds a non-contiguous input (an `[n, c, w, h]` tensor transposed).
fn check_with(c: Case, dtype: DType, seed: u64, transpose_input: bool) {
    let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = if transpose_input {
        let t = uniform(&mut rng, &[c.n, c.c, c.w, c.h], dtype)
            .transpose(2, 3)
            .unwrap();
        assert!(!t.is_contiguous());
        t
    } else {
        uniform(&mut rng, &[c.n, c.c, c.h, c.w], dtype)
    };
    let w = uniform(&mut rng, &[c.k, c.c, c.kh, c.kw], dtype);
    let r = uniform(&mut rng, &c.out_dims(), dtype);

    let ours = run(
        |x, w| conv2d(x, w, c.stride, c.padding).unwrap(),
        &x,
        &w,
        &r,
    );
    let reference = reference(c, &x, &w, &r);
    for (what, a, b) in [
        ("output", &ours.0, &reference.0),
        ("input gradient", &ours.1, &reference.1),
        ("weight gradient", &ours.2, &reference.2),
    ] {
        assert_eq!(a.dtype(), dtype, "{what} of {c:?}");
        let d = rel_diff(a, b);
        assert!(
            d <= tol,
            "{what} of {c:?} in {dtype:?}: relative difference {d:e} > {tol:e}"
        );
    }
}

fn check(c: Case) {
    check_with(c, DType::F32, 7, false);
    check_with(c, DType::F64, 8, false);
}

#[test]
fn matches_candle_on_preresnet_like_shapes() {
    check(case((2, 3, 8, 8), (4, 3, 3), 1, 1));
    check(case((3, 4, 8, 8), (4, 3, 3), 1, 1));
    check(case((2, 4, 8, 8), (6, 3, 3), 2, 1));
    check(case((2, 4, 8, 8), (6, 1, 1), 2, 0));
    check(case((2, 5, 6, 6), (3, 1, 1), 1, 0));
}

#[test]
fn matches_candle_on_strides_paddings_and_kernels() {
    let mut rng = ChaCha8Rng::seed_from_u64(2020);
    for stride in [1, 2] {
        for padding in [0, 1, 2] {
            for kernel in [1, 3] {
                let n = rng.random_range(1..=4);
                let ch = rng.random_range(1..=5);
                let h = rng.random_range(kernel..=9);
                let w = rng.random_range(kernel..=9);
                let k = rng.random_range(1..=5);
                check(case((n, ch, h, w), (k, kernel, kernel), stride, padding));
            }
        }
    }
}

#[test]
fn matches_candle_on_rectangular_kernels_and_odd_sizes() {
    check(case((2, 3, 7, 5), (4, 1, 3), 1, 1));
    check(case((2, 3, 7, 5), (4, 3, 1), 2, 0));
    check(case((1, 2, 5, 9), (3, 2, 3), 2, 2));
    check(case((1, 2, 4, 4), (2, 4, 4), 1, 0)); // kernel as large as the input: 1×1 output
    check(case((1, 1, 1, 1), (1, 3, 3), 1, 1));
    check(case((2, 2, 3, 3), (2, 1, 1), 1, 2)); // padding larger than the kernel
}

#[test]
fn matches_candle_on_shapes_spanning_many_register_blocks() {
    // Stride 1 in f32 runs on the direct kernels on AVX-512 CPUs: 19 output and 10 input
    // channels leave partial row blocks (8+8+3, 4·4+3), 90 patch rows a partial column block,
    // and 13-wide rows padded to 15 a partial last vector (195 = 12·16 + 3 positions).
    check(case((9, 10, 13, 13), (19, 3, 3), 1, 1));
    check(case((3, 16, 32, 32), (16, 3, 3), 1, 1));
    check(case((5, 7, 11, 9), (12, 5, 5), 1, 2));
    check(case((4, 21, 10, 10), (17, 1, 1), 1, 0));
}

#[test]
fn matches_candle_on_batches_larger_than_the_weight_group() {
    // 37 samples: the weight gradient sums 13 groups of 3, the last one short.
    check(case((37, 3, 6, 6), (4, 3, 3), 1, 1));
}

#[test]
fn matches_candle_on_non_contiguous_input() {
    for dtype in [DType::F32, DType::F64] {
        check_with(case((2, 3, 6, 5), (4, 3, 3), 1, 1), dtype, 11, true);
        check_with(case((2, 3, 6, 5), (4, 1, 1), 1, 0), dtype, 12, true);
    }
}

#[test]
fn empty_batch_gives_empty_output() {
    let x = Tensor::zeros((0, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((4, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(conv2d(&x, &w, 2, 1).unwrap().dims(), &[0, 4, 4, 4]);
}

#[test]
fn other_dtypes_fall_back_to_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = uniform(&mut rng, &[2, 3, 5, 5], DType::F16);
    let w = uniform(&mut rng, &[2, 3, 3, 3], DType::F16);
    let ours = conv2d(&x, &w, 1, 1).unwrap();
    let reference = x.conv2d(&w, 1, 1, 1, 1).unwrap();
    assert_eq!(rel_diff(&ours, &reference), 0.0);
}

#[test]
fn invalid_arguments_are_reported() {
    let t = |dims: &[usize], dtype: DType| Tensor::zeros(dims, dtype, &Device::Cpu).unwrap();
    let f32_ = DType::F32;
    let cases: [(&str, Tensor, Tensor, usize, usize, &str); 5] = [
        (
            "rank",
            t(&[3, 8, 8], f32_),
            t(&[4, 3, 3, 3], f32_),
            1,
            1,
            "rank 4",
        ),
        (
            "channels",
            t(&[1, 2, 8, 8], f32_),
            t(&[4, 3, 3, 3], f32_),
            1,
            1,
            "channels",
        ),
        (
            "stride",
            t(&[1, 3, 8, 8], f32_),
            t(&[4, 3, 3, 3], f32_),
            0,
            1,
            "stride",
        ),
        (
            "kernel",
            t(&[1, 3, 2, 2], f32_),
            t(&[4, 3, 5, 5], f32_),
            1,
            1,
            "does not fit",
        ),
        (
            "dtype",
            t(&[1, 3, 8, 8], f32_),
            t(&[4, 3, 3, 3], DType::F64),
            1,
            1,
            "to_dtype",
        ),
    ];
    for (what, x, w, stride, padding, expected) in cases {
        match conv2d(&x, &w, stride, padding) {
            Err(e @ NnError::InvalidConv { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(expected),
                    "{what}: message `{msg}` lacks `{expected}`"
                );
            }
            other => panic!("{what}: expected InvalidConv, got {other:?}"),
        }
    }
}

/// Output and both gradients match PyTorch (f64, ≤ 1e-12 relative; f32 from the same inputs,
/// ≤ 1e-5): fixtures from `scripts/pytorch/conv_fixtures.py`.
#[test]
fn matches_pytorch_fixtures() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/conv.safetensors"
    );
    let bytes = std::fs::read(path).expect("reading the fixture");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("fixture header");
    let meta = meta.metadata().clone().expect("fixture metadata");
    assert!(
        meta["torch_version"].starts_with("2."),
        "fixture from torch {}",
        meta["torch_version"]
    );
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    let mut cases = 0;
    for i in 0.. {
        let Some(geom) = meta.get(&i.to_string()) else {
            break;
        };
        let num = |key: &str| -> usize {
            let field = geom.split(' ').find_map(|kv| kv.strip_prefix(key)).unwrap();
            field.parse().unwrap()
        };
        let (stride, padding) = (num("stride="), num("padding="));
        let get = |name: &str| tensors[&format!("{i}.{name}")].clone();
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            let cast = |t: Tensor| t.to_dtype(dtype).unwrap();
            let (x, w, dy) = (cast(get("x")), cast(get("w")), cast(get("dy")));
            let ours = run(|x, w| conv2d(x, w, stride, padding).unwrap(), &x, &w, &dy);
            for (what, a, b) in [
                ("y", &ours.0, "y"),
                ("dx", &ours.1, "dx"),
                ("dw", &ours.2, "dw"),
            ] {
                let d = rel_diff(a, &get(b));
                assert!(
                    d <= tol,
                    "case {i} ({geom}) {what} in {dtype:?}: {d:e} > {tol:e}"
                );
            }
        }
        cases += 1;
    }
    assert_eq!(cases, 5, "the fixture holds five cases");
}

/// `sum_all` seeds the backward with a stride-0 broadcast of ones: the backward must read
/// a non-contiguous `dy`.
#[test]
fn gradient_of_a_broadcast_dy_matches_candle() {
    let c = case((2, 3, 6, 6), (4, 3, 3), 2, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let x = uniform(&mut rng, &[c.n, c.c, c.h, c.w], DType::F64);
    let w = uniform(&mut rng, &[c.k, c.c, c.kh, c.kw], DType::F64);
    let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
    let y = conv2d(xv.as_tensor(), wv.as_tensor(), c.stride, c.padding).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    let ones = Tensor::ones(y.dims(), DType::F64, &Device::Cpu).unwrap();
    let (_, dx, dw) = reference(c, &x, &w, &ones);
    assert!(rel_diff(grads.get(xv.as_tensor()).unwrap(), &dx) <= 1e-12);
    assert!(rel_diff(grads.get(wv.as_tensor()).unwrap(), &dw) <= 1e-12);
}

/// Only the gradients that are asked for are computed: a plain tensor (the data fed to a
/// network's first convolution) gets none, a variable gets the same one as before.
#[test]
fn gradients_are_computed_only_for_tensors_that_track_them() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = uniform(&mut rng, &[2, 3, 6, 6], DType::F64);
    let w = uniform(&mut rng, &[4, 3, 3, 3], DType::F64);
    let w_var = Var::from_tensor(&w).unwrap();
    let x_var = Var::from_tensor(&x).unwrap();
    let both = conv2d(x_var.as_tensor(), w_var.as_tensor(), 1, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let weight_only = conv2d(&x, w_var.as_tensor(), 1, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(both.get(x_var.as_tensor()).is_some());
    assert!(weight_only.get(&x).is_none(), "the data got a gradient");
    let (a, b) = (
        both.get(w_var.as_tensor()).unwrap(),
        weight_only.get(w_var.as_tensor()).unwrap(),
    );
    assert_eq!(rel_diff(a, b), 0.0);
    let input_only = conv2d(x_var.as_tensor(), &w, 1, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(
        input_only.get(&w).is_none(),
        "the frozen weight got a gradient"
    );
    assert_eq!(
        rel_diff(
            input_only.get(x_var.as_tensor()).unwrap(),
            both.get(x_var.as_tensor()).unwrap()
        ),
        0.0
    );
}

/// `conv2d_add` is `add(conv2d(x, w), r)` bit for bit: its output and the gradients of x, w and
/// r under the loss `sum(y · G)`, in f32 and f64, on shapes whose output rows are whole vectors
/// (written by the product straight into the output) and shapes whose rows are not (copied out
/// of wide rows), strided or not.
#[test]
fn conv2d_add_is_conv2d_then_add_bit_for_bit() {
    let cases = [
        case((3, 4, 16, 16), (5, 3, 3), 1, 1),
        case((2, 4, 8, 8), (6, 3, 3), 1, 1),
        case((2, 5, 13, 11), (3, 3, 3), 2, 1),
        case((2, 4, 8, 8), (6, 1, 1), 2, 0),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        for dtype in [DType::F32, DType::F64] {
            let mut rng = ChaCha8Rng::seed_from_u64(40 + i as u64);
            let x = uniform(&mut rng, &[c.n, c.c, c.h, c.w], dtype);
            let w = uniform(&mut rng, &[c.k, c.c, c.kh, c.kw], dtype);
            let r = uniform(&mut rng, &c.out_dims(), dtype);
            let g = uniform(&mut rng, &c.out_dims(), dtype);
            let run = |fused: bool| {
                let (xv, wv, rv) = (
                    Var::from_tensor(&x).unwrap(),
                    Var::from_tensor(&w).unwrap(),
                    Var::from_tensor(&r).unwrap(),
                );
                let (xt, wt, rt) = (xv.as_tensor(), wv.as_tensor(), rv.as_tensor());
                let y = if fused {
                    conv2d_add(xt, wt, c.stride, c.padding, rt).unwrap()
                } else {
                    add(&conv2d(xt, wt, c.stride, c.padding).unwrap(), rt).unwrap()
                };
                let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                let grad = |t: &Tensor| grads.get(t).expect("a gradient").clone();
                [y.clone(), grad(xt), grad(wt), grad(rt)]
            };
            let (fused, separate) = (run(true), run(false));
            let bits = |t: &Tensor| -> Vec<u64> { values(t).iter().map(|x| x.to_bits()).collect() };
            for ((what, a), b) in ["output", "dx", "dw", "dr"]
                .iter()
                .zip(&fused)
                .zip(&separate)
            {
                assert_eq!(a.dims(), b.dims(), "{what} of {c:?} in {dtype:?}");
                assert!(bits(a) == bits(b), "{what} of {c:?} in {dtype:?} differs");
            }
            // The residual's gradient is the output's: G itself.
            assert_eq!(rel_diff(&fused[3], &g), 0.0, "dr of {c:?} in {dtype:?}");
        }
    }
}

/// A residual that does not match the output is refused with an error that says so.
#[test]
fn conv2d_add_refuses_a_residual_of_another_shape_or_dtype() {
    let t = |dims: &[usize], dtype: DType| Tensor::zeros(dims, dtype, &Device::Cpu).unwrap();
    let (x, w) = (t(&[2, 3, 8, 8], DType::F32), t(&[4, 3, 3, 3], DType::F32));
    for (what, r) in [
        ("shape", t(&[2, 4, 4, 4], DType::F32)),
        ("dtype", t(&[2, 4, 8, 8], DType::F64)),
    ] {
        match conv2d_add(&x, &w, 1, 1, &r) {
            Err(e @ NnError::InvalidConv { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("residual must match the output"),
                    "{what}: {msg}"
                );
            }
            other => panic!("{what}: expected InvalidConv, got {other:?}"),
        }
    }
    // The same residual at the output's shape and dtype is accepted.
    let y = conv2d_add(&x, &w, 1, 1, &t(&[2, 4, 8, 8], DType::F32)).unwrap();
    assert_eq!(y.dims(), &[2, 4, 8, 8]);
}
