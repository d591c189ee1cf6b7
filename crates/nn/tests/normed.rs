//! `conv2d_normed` against `conv2d` of the mapped input, bit for bit, on every kernel set this
//! CPU has (its own binary: the kernel set is process-wide, and the other convolution tests
//! compare runs that must not change sets halfway), and its errors.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{case, uniform, values};
use explr_nn::{add, conv2d, NnError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A stand-in normalization for [`explr_nn::conv2d_normed`]: a fixed map per plane, and a
/// backward that records the gradient it is handed.
struct FixedMap {
    map: explr_nn::PlaneAffine,
    seen: std::sync::Mutex<Option<Tensor>>,
}

impl explr_nn::InputNorm for FixedMap {
    fn forward(
        &self,
        _x: candle_core::CpuStorageRef<'_>,
        _dims: [usize; 4],
    ) -> candle_core::Result<explr_nn::PlaneAffine> {
        Ok(self.map.clone())
    }

    fn backward(&self, x: &Tensor, dy: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        *self.seen.lock().unwrap() = Some(dy.clone());
        let c = x.dims()[1];
        let zeros = Tensor::zeros(c, x.dtype(), x.device())?;
        Ok((dy.clone(), zeros.clone(), zeros))
    }
}

/// `conv2d_normed` convolves the mapped input, bit for bit `conv2d` of the map's output
/// computed by candle's ops and `relu`: the output, the weight's and the residual's gradients,
/// and the gradient it hands the normalization (the one at the map's output), on every kernel
/// set this CPU has.
#[test]
fn conv2d_normed_is_conv2d_of_the_mapped_input_bit_for_bit() {
    use explr_nn::ConvKernels;
    let cases = [
        case((3, 4, 9, 7), (5, 3, 3), 1, 1),
        case((2, 3, 10, 12), (4, 3, 3), 2, 1),
    ];
    for set in ConvKernels::ALL.into_iter().filter(|k| k.is_supported()) {
        ConvKernels::force(Some(set)).unwrap();
        for (i, c) in cases.into_iter().enumerate() {
            for (dtype, residual) in [(DType::F32, false), (DType::F64, true)] {
                let mut rng = ChaCha8Rng::seed_from_u64(60 + i as u64);
                let x = uniform(&mut rng, &[c.n, c.c, c.h, c.w], dtype);
                let w = uniform(&mut rng, &[c.k, c.c, c.kh, c.kw], dtype);
                let r = uniform(&mut rng, &c.out_dims(), dtype);
                let g = uniform(&mut rng, &c.out_dims(), dtype);
                let planes = c.n * c.c;
                // Values of both dtypes, different per plane.
                let map = explr_nn::PlaneAffine {
                    centre: (0..planes).map(|p| 0.125 * p as f64 - 0.5).collect(),
                    scale: (0..planes).map(|p| 1.5 + 0.25 * p as f64).collect(),
                    shift: (0..planes).map(|p| 0.0625 * p as f64 - 0.25).collect(),
                    relu: true,
                };
                let (wv, rv) = (Var::from_tensor(&w).unwrap(), Var::from_tensor(&r).unwrap());
                let (wt, rt) = (wv.as_tensor(), rv.as_tensor());
                let r_in = residual.then_some(rt);
                let norm = std::sync::Arc::new(FixedMap {
                    map: map.clone(),
                    seen: Default::default(),
                });
                let xv = Var::from_tensor(&x).unwrap();
                let ones = Tensor::ones(c.c, dtype, &Device::Cpu).unwrap();
                let y = explr_nn::conv2d_normed(
                    (xv.as_tensor(), norm.clone()),
                    (&ones, &ones),
                    wt,
                    (c.stride, c.padding),
                    r_in,
                )
                .unwrap();
                let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                let seen = norm
                    .seen
                    .lock()
                    .unwrap()
                    .clone()
                    .expect("the norm's backward ran");
                // The reference: the map by candle's ops, then conv2d (and the residual).
                let per_plane = |v: &[f64]| {
                    Tensor::from_vec(v.to_vec(), (c.n, c.c, 1, 1), &Device::Cpu)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap()
                };
                let mapped = x
                    .broadcast_sub(&per_plane(&map.centre))
                    .unwrap()
                    .broadcast_mul(&per_plane(&map.scale))
                    .unwrap()
                    .broadcast_add(&per_plane(&map.shift))
                    .unwrap();
                let mv = Var::from_tensor(&explr_nn::relu(&mapped).unwrap()).unwrap();
                let mut y_ref = conv2d(mv.as_tensor(), wt, c.stride, c.padding).unwrap();
                if residual {
                    y_ref = add(&y_ref, rt).unwrap();
                }
                let grads_ref = (&y_ref * &g)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let bits =
                    |t: &Tensor| -> Vec<u64> { values(t).iter().map(|x| x.to_bits()).collect() };
                let what = format!("{set} {c:?} {dtype:?}");
                assert!(bits(&y) == bits(&y_ref), "output, {what}");
                assert!(
                    bits(grads.get(wt).unwrap()) == bits(grads_ref.get(wt).unwrap()),
                    "dw, {what}"
                );
                assert!(
                    bits(&seen) == bits(grads_ref.get(mv.as_tensor()).unwrap()),
                    "the gradient at the map's output, {what}"
                );
                if residual {
                    assert!(bits(grads.get(rt).unwrap()) == bits(&g), "dr, {what}");
                }
                // Not vacuous: the ReLU zeroed some inputs and kept others.
                let m = values(&explr_nn::relu(&mapped).unwrap());
                assert!(m.contains(&0.0) && m.iter().any(|v| *v > 0.0), "{what}");
            }
        }
    }
    ConvKernels::force(None).unwrap();
}

/// Parameters of the wrong shape, and a convolution with a bias, are refused with errors that
/// say what to do.
#[test]
fn conv2d_normed_refuses_what_it_cannot_apply() {
    let t = |dims: &[usize], dtype: DType| Tensor::zeros(dims, dtype, &Device::Cpu).unwrap();
    let (x, w) = (t(&[2, 3, 8, 8], DType::F32), t(&[4, 3, 3, 3], DType::F32));
    let norm = || -> std::sync::Arc<dyn explr_nn::InputNorm> {
        std::sync::Arc::new(FixedMap {
            map: explr_nn::PlaneAffine {
                centre: vec![0.0; 6],
                scale: vec![1.0; 6],
                shift: vec![0.0; 6],
                relu: false,
            },
            seen: Default::default(),
        })
    };
    let good = t(&[3], DType::F32);
    for (what, gamma) in [
        ("shape", t(&[4], DType::F32)),
        ("dtype", t(&[3], DType::F64)),
    ] {
        match explr_nn::conv2d_normed((&x, norm()), (&gamma, &good), &w, (1, 1), None) {
            Err(e @ NnError::InvalidConv { .. }) => {
                assert!(e.to_string().contains("must be [3]"), "{what}: {e}")
            }
            other => panic!("{what}: expected InvalidConv, got {other:?}"),
        }
    }
    let y = explr_nn::conv2d_normed((&x, norm()), (&good, &good), &w, (1, 1), None).unwrap();
    assert_eq!(y.dims(), &[2, 4, 8, 8]);
    let store = explr_nn::ParamStore::new(&Device::Cpu, DType::F32, 0);
    let cfg = explr_nn::Conv2dConfig::same(1);
    let role = explr_nn::Role::Other;
    let biased = explr_nn::Conv2d::new(&store.root().push("c"), 3, 4, 3, cfg, true, role).unwrap();
    match biased.forward_normed((&x, norm()), (&good, &good), None) {
        Err(e @ NnError::InvalidConv { .. }) => {
            assert!(e.to_string().contains("has a bias"), "{e}")
        }
        other => panic!("expected InvalidConv, got {other:?}"),
    }
}
