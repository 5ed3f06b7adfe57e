//! The fused ops (`embedkit_train::fused`) against the composition of plain candle ops they replace: forward
//! values and every input's gradient, on random inputs with padded sequences, odd widths (not a multiple of the
//! 16-lane loops) and enough rows to split into several parallel tasks. Also: results are bit-identical for 1
//! and 3 threads, which resume-equals-uninterrupted training relies on.
//!
//! Error measure: max |fused − reference| / max |reference| per tensor, required ≤ 2e-5 (f32 noise through
//! a few hundred-term sums; a wrong term in any backward is off by orders of magnitude more).

use candle_core::{D, Device, Tensor, Var};
use embedkit_train::SplitMix64;
use embedkit_train::fused::{
    batched_matmul, bias_dropout_add, bias_gelu, bias_split_heads, layer_norm, masked_softmax,
};

const TOL: f32 = 2e-5;

fn random(rng: &mut SplitMix64, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| lo + (hi - lo) * rng.next_f32()).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn assert_close(what: &str, ours: &Tensor, want: &Tensor) {
    assert_eq!(ours.dims(), want.dims(), "{what}: shape");
    let (a, b) = (values(ours), values(want));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        scale > 0.0,
        "{what}: reference is all zero, the check would be empty"
    );
    let err = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        err <= TOL * scale,
        "{what}: max error {err:.3e} against max |value| {scale:.3e}"
    );
}

/// Gradients of `Σ y·r` (a random projection, so every output element matters) for each of `vars`.
fn grads(y: &Tensor, r: &Tensor, vars: &[&Var]) -> Vec<Tensor> {
    let g = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
    vars.iter()
        .map(|v| g.get(v.as_tensor()).expect("a gradient").clone())
        .collect()
}

fn reference_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
    let mean = x.mean_keepdim(D::Minus1).unwrap();
    let centered = x.broadcast_sub(&mean).unwrap();
    let var = centered.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let normed = centered
        .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
        .unwrap();
    normed.broadcast_mul(w).unwrap().broadcast_add(b).unwrap()
}

#[test]
fn layer_norm_matches_candle_ops() {
    let mut rng = SplitMix64::new(7);
    // 3·97 rows of 37 (not a multiple of 16), offset and scaled like real hidden states; >1 task of rows.
    for (shape, h) in [(vec![3, 97, 37], 37), (vec![600, 384], 384)] {
        let x = Var::from_tensor(&random(&mut rng, &shape, -3.0, 5.0)).unwrap();
        let w = Var::from_tensor(&random(&mut rng, &[h], 0.5, 1.5)).unwrap();
        let b = Var::from_tensor(&random(&mut rng, &[h], -0.5, 0.5)).unwrap();
        let r = random(&mut rng, &shape, -1.0, 1.0);
        let ours = layer_norm(&x, &w, &b, 1e-12).unwrap();
        let want = reference_layer_norm(&x, &w, &b, 1e-12);
        assert_close("layer norm forward", &ours, &want);
        let g_ours = grads(&ours, &r, &[&x, &w, &b]);
        let g_want = grads(&want, &r, &[&x, &w, &b]);
        for ((name, a), b) in ["dx", "dweight", "dbias"].iter().zip(&g_ours).zip(&g_want) {
            assert_close(&format!("layer norm {name} {shape:?}"), a, b);
        }
    }
}

#[test]
fn masked_softmax_matches_candle_ops() {
    let mut rng = SplitMix64::new(11);
    let (b, heads, t) = (3, 4, 45);
    // Sequence lengths 45, 30 and 1: the last two are padded, one down to a single real key.
    let lens = [45usize, 30, 1];
    let mut mask = vec![0f32; b * t];
    for (i, len) in lens.iter().enumerate() {
        mask[i * t + len..(i + 1) * t].fill(-1.0e30);
    }
    let mask = Tensor::from_vec(mask, (b, t), &Device::Cpu).unwrap();
    let scale = 0.125f32;
    let s = Var::from_tensor(&random(&mut rng, &[b, heads, t, t], -20.0, 20.0)).unwrap();
    let r = random(&mut rng, &[b, heads, t, t], -1.0, 1.0);
    let ours = masked_softmax(&s, &mask, scale, None).unwrap();
    let logits = (s.as_tensor() * f64::from(scale))
        .unwrap()
        .broadcast_add(&mask.reshape((b, 1, 1, t)).unwrap())
        .unwrap();
    let max = logits.max_keepdim(D::Minus1).unwrap().detach();
    let e = logits.broadcast_sub(&max).unwrap().exp().unwrap();
    let want = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
    assert_close("softmax forward", &ours, &want);
    // Padded keys get exactly zero probability.
    let p = values(&ours);
    for h in 0..heads {
        for q in 0..t {
            let row = &p[((2 * heads + h) * t + q) * t..][..t];
            assert_eq!(row[0], 1.0);
            assert!(row[1..].iter().all(|v| *v == 0.0));
        }
    }
    let g_ours = grads(&ours, &r, &[&s]);
    let g_want = grads(&want, &r, &[&s]);
    assert_close("softmax dscores", &g_ours[0], &g_want[0]);
}

#[test]
fn bias_gelu_matches_candle_ops() {
    let mut rng = SplitMix64::new(13);
    let shape = [70, 53];
    let x = Var::from_tensor(&random(&mut rng, &shape, -6.0, 6.0)).unwrap();
    let bias = Var::from_tensor(&random(&mut rng, &[53], -1.0, 1.0)).unwrap();
    let r = random(&mut rng, &shape, -1.0, 1.0);
    let ours = bias_gelu(&x, &bias).unwrap();
    let want = x.broadcast_add(&bias).unwrap().gelu_erf().unwrap();
    assert_close("gelu forward", &ours, &want);
    let g_ours = grads(&ours, &r, &[&x, &bias]);
    let g_want = grads(&want, &r, &[&x, &bias]);
    assert_close("gelu dx", &g_ours[0], &g_want[0]);
    assert_close("gelu dbias", &g_ours[1], &g_want[1]);
}

#[test]
fn bias_split_heads_matches_candle_ops() {
    let mut rng = SplitMix64::new(29);
    let (b, t, heads, d) = (3, 50, 4, 24);
    let y = Var::from_tensor(&random(&mut rng, &[b * t, heads * d], -2.0, 2.0)).unwrap();
    let bias = Var::from_tensor(&random(&mut rng, &[heads * d], -1.0, 1.0)).unwrap();
    let r = random(&mut rng, &[b, heads, t, d], -1.0, 1.0);
    let ours = bias_split_heads(&y, &bias, b, t, heads).unwrap();
    let want = y
        .broadcast_add(&bias)
        .unwrap()
        .reshape((b, t, heads, d))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap();
    assert_close("split heads forward", &ours, &want);
    let g_ours = grads(&ours, &r, &[&y, &bias]);
    let g_want = grads(&want, &r, &[&y, &bias]);
    assert_close("split heads dy", &g_ours[0], &g_want[0]);
    assert_close("split heads dbias", &g_ours[1], &g_want[1]);
}

/// A dropout mask as the trainer draws it: 0 with probability `p`, else 1/(1−p).
fn dropout_mask(rng: &mut SplitMix64, shape: &[usize], p: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            if rng.next_f32() < p {
                0.0
            } else {
                1.0 / (1.0 - p)
            }
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn masked_softmax_with_dropout_matches_candle_ops() {
    let mut rng = SplitMix64::new(19);
    let (b, heads, t) = (2, 3, 40);
    let mut mask = vec![0f32; b * t];
    mask[t + 25..].fill(-1.0e30);
    let mask = Tensor::from_vec(mask, (b, t), &Device::Cpu).unwrap();
    let s = Var::from_tensor(&random(&mut rng, &[b, heads, t, t], -20.0, 20.0)).unwrap();
    let drop = dropout_mask(&mut rng, &[b, heads, t, t], 0.3);
    let r = random(&mut rng, &[b, heads, t, t], -1.0, 1.0);
    let ours = masked_softmax(&s, &mask, 0.2, Some(&drop)).unwrap();
    let plain = masked_softmax(s.as_tensor(), &mask, 0.2, None).unwrap();
    let logits = (s.as_tensor() * 0.2)
        .unwrap()
        .broadcast_add(&mask.reshape((b, 1, 1, t)).unwrap())
        .unwrap();
    let max = logits.max_keepdim(D::Minus1).unwrap().detach();
    let e = logits.broadcast_sub(&max).unwrap().exp().unwrap();
    let want = e
        .broadcast_div(&e.sum_keepdim(D::Minus1).unwrap())
        .unwrap()
        .mul(&drop)
        .unwrap();
    assert_close("softmax+dropout forward", &ours, &want);
    // The mask really drops something: the dropped output differs from the plain softmax.
    let diff = (&ours - &plain).unwrap().abs().unwrap().max_all().unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() > 1e-3);
    let g_ours = grads(&ours, &r, &[&s]);
    let g_want = grads(&want, &r, &[&s]);
    assert_close("softmax+dropout dscores", &g_ours[0], &g_want[0]);
}

#[test]
fn bias_dropout_add_matches_candle_ops() {
    let mut rng = SplitMix64::new(23);
    let shape = [130, 45];
    for p in [0.0f32, 0.25] {
        let x = Var::from_tensor(&random(&mut rng, &shape, -3.0, 3.0)).unwrap();
        let bias = Var::from_tensor(&random(&mut rng, &[45], -1.0, 1.0)).unwrap();
        let res = Var::from_tensor(&random(&mut rng, &shape, -3.0, 3.0)).unwrap();
        let drop = (p > 0.0).then(|| dropout_mask(&mut rng, &shape, p));
        let r = random(&mut rng, &shape, -1.0, 1.0);
        let ours = bias_dropout_add(&x, &bias, drop.as_ref(), &res).unwrap();
        let mut want = x.broadcast_add(&bias).unwrap();
        if let Some(d) = &drop {
            want = want.mul(d).unwrap();
        }
        let want = (want + res.as_tensor()).unwrap();
        assert_close(&format!("bias+dropout+add forward p={p}"), &ours, &want);
        let g_ours = grads(&ours, &r, &[&x, &bias, &res]);
        let g_want = grads(&want, &r, &[&x, &bias, &res]);
        for ((name, a), b) in ["dx", "dbias", "dresidual"]
            .iter()
            .zip(&g_ours)
            .zip(&g_want)
        {
            assert_close(&format!("bias+dropout+add {name} p={p}"), a, b);
        }
    }
}

/// Forward and backward values of all the ops, run inside a pool of `threads` threads.
fn run_all(threads: usize) -> Vec<Vec<f32>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut rng = SplitMix64::new(17);
        let x = Var::from_tensor(&random(&mut rng, &[900, 96], -2.0, 2.0)).unwrap();
        let w = Var::from_tensor(&random(&mut rng, &[96], 0.5, 1.5)).unwrap();
        let b = Var::from_tensor(&random(&mut rng, &[96], -0.5, 0.5)).unwrap();
        let y = layer_norm(&x, &w, &b, 1e-12).unwrap();
        let y = bias_gelu(&y, &b).unwrap();
        let s = y.reshape((2, 5, 90, 96)).unwrap();
        let mask = Tensor::zeros((2, 96), candle_core::DType::F32, &Device::Cpu).unwrap();
        let drop = dropout_mask(&mut rng, &[2, 5, 90, 96], 0.1);
        let p = masked_softmax(&s, &mask, 0.3, Some(&drop)).unwrap();
        let hd = dropout_mask(&mut rng, &[900, 96], 0.1);
        let p = bias_dropout_add(&p.reshape((900, 96)).unwrap(), &b, Some(&hd), &x).unwrap();
        let p = p.reshape((2, 5, 90, 96)).unwrap();
        let r = random(&mut rng, &[2, 5, 90, 96], -1.0, 1.0);
        let mut out = vec![values(&p)];
        out.extend(grads(&p, &r, &[&x, &w, &b]).iter().map(values));
        out
    })
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    assert_eq!(run_all(1), run_all(3));
}

#[test]
fn parallel_dropout_masks_equal_sequential_draws() {
    // Long enough for several parallel chunks, not a multiple of the chunk size; a seed near u64::MAX so the
    // state wraps.
    for seed in [42u64, u64::MAX - 3] {
        let n = 100_003;
        let (p, keep) = (0.1f32, 1.0 / 0.9);
        let mut seq = SplitMix64::new(seed);
        let want: Vec<f32> = (0..n)
            .map(|_| if seq.next_f32() < p { 0.0 } else { keep })
            .collect();
        let mut par = SplitMix64::new(seed);
        let mut got = vec![0f32; n];
        par.dropout_mask(&mut got, p, keep);
        assert_eq!(got, want, "seed {seed}");
        assert_eq!(par, seq, "generator state after the mask, seed {seed}");
        let dropped = got.iter().filter(|v| **v == 0.0).count();
        assert!(
            (9_000..11_000).contains(&dropped),
            "{dropped} of {n} dropped"
        );
    }
}

#[test]
fn batched_matmul_matches_candle_matmul() {
    let mut rng = SplitMix64::new(31);
    let (batch, m, k, n) = (7, 19, 11, 23);
    for transpose_b in [false, true] {
        let a = Var::from_tensor(&random(&mut rng, &[batch, m, k], -1.0, 1.0)).unwrap();
        let b_shape = if transpose_b {
            [batch, n, k]
        } else {
            [batch, k, n]
        };
        let b = Var::from_tensor(&random(&mut rng, &b_shape, -1.0, 1.0)).unwrap();
        let r = random(&mut rng, &[batch, m, n], -1.0, 1.0);
        let ours = batched_matmul(&a, &b, transpose_b).unwrap();
        let want = if transpose_b {
            a.matmul(&b.t().unwrap()).unwrap()
        } else {
            a.matmul(&b).unwrap()
        };
        assert_close(&format!("bmm forward T={transpose_b}"), &ours, &want);
        let g_ours = grads(&ours, &r, &[&a, &b]);
        let g_want = grads(&want, &r, &[&a, &b]);
        assert_close(&format!("bmm da T={transpose_b}"), &g_ours[0], &g_want[0]);
        assert_close(&format!("bmm db T={transpose_b}"), &g_ours[1], &g_want[1]);
    }
}
