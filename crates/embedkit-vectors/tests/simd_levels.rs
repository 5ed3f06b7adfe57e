//! Every SIMD level this CPU supports agrees with the scalar reference on random data, including lengths
//! that leave tails for every vector width and tile shapes with leftover rows and queries.

use embedkit_vectors::simd::{Kernels, SimdLevel, supported_levels};

/// A small deterministic generator (PCG-style LCG) so the tests need no extra crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    fn f32(&mut self) -> f32 {
        (self.next() as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as i8).collect()
    }
    fn u8s(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const LENGTHS: [usize; 12] = [0, 1, 7, 8, 15, 16, 17, 33, 64, 100, 384, 1031];

fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 1e-5 * scale.max(1.0)
}

fn levels() -> Vec<Kernels> {
    let levels = supported_levels();
    assert!(levels.contains(&SimdLevel::Scalar));
    levels
        .into_iter()
        .map(|l| Kernels::new(l).unwrap())
        .collect()
}

#[test]
fn report_levels() {
    // Visible with --nocapture; documents which levels this run actually exercised.
    eprintln!(
        "SIMD levels tested: {:?}; active: {}",
        supported_levels(),
        embedkit_vectors::simd::active().level()
    );
}

#[test]
fn single_pair_kernels_agree_with_scalar() {
    let s = Kernels::scalar();
    let mut rng = Rng(7);
    for k in levels() {
        for n in LENGTHS {
            let (a, b) = (rng.f32s(n), rng.f32s(n));
            let scale: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
            assert!(
                close(k.dot(&a, &b), s.dot(&a, &b), scale),
                "{:?} dot n={n}",
                k.level()
            );
            let l2: f32 = s.l2_squared(&a, &b);
            assert!(
                close(k.l2_squared(&a, &b), l2, l2),
                "{:?} l2 n={n}",
                k.level()
            );
            let l1 = s.l1(&a, &b);
            assert!(close(k.l1(&a, &b), l1, l1), "{:?} l1 n={n}", k.level());

            let c = rng.i8s(n);
            let scale: f32 = a
                .iter()
                .zip(&c)
                .map(|(x, y)| (x * f32::from(*y)).abs())
                .sum();
            assert!(
                close(k.dot_f32_i8(&a, &c), s.dot_f32_i8(&a, &c), scale),
                "{:?} f32·i8 n={n}",
                k.level()
            );
            let d = rng.i8s(n);
            assert_eq!(
                k.dot_i8(&c, &d),
                s.dot_i8(&c, &d),
                "{:?} i8·i8 n={n}",
                k.level()
            );
            // Extremes: every product is 128² (the worst case for the i16 pair sums).
            let m = vec![-128i8; n];
            assert_eq!(
                k.dot_i8(&m, &m),
                (n as i32) * 16384,
                "{:?} i8 extremes",
                k.level()
            );

            let (x, y) = (rng.u8s(n), rng.u8s(n));
            assert_eq!(
                k.hamming(&x, &y),
                s.hamming(&x, &y),
                "{:?} hamming n={n}",
                k.level()
            );
            let ones = vec![0xffu8; n];
            assert_eq!(k.hamming(&ones, &vec![0u8; n]), 8 * n as u32);
        }
    }
}

#[test]
fn many_to_many_kernels_agree_with_scalar() {
    let s = Kernels::scalar();
    let mut rng = Rng(11);
    for k in levels() {
        // Query counts around the 4-query tile, row counts around the 2- and 4-row tiles.
        for (nq, nr, dims) in [
            (1, 1, 384),
            (3, 9, 17),
            (4, 8, 384),
            (5, 7, 100),
            (9, 13, 33),
            (2, 3, 1),
        ] {
            let q = rng.f32s(nq * dims);
            let r = rng.f32s(nr * dims);
            let mut got = vec![0.0; nq * nr];
            let mut want = vec![0.0; nq * nr];
            k.dot_many(&q, &r, dims, &mut got);
            s.dot_many(&q, &r, dims, &mut want);
            for i in 0..nq * nr {
                assert!(
                    close(got[i], want[i], dims as f32),
                    "{:?} dot_many {nq}x{nr}x{dims} [{i}]",
                    k.level()
                );
                let (qi, ri) = (i / nr, i % nr);
                assert!(close(
                    got[i],
                    s.dot(&q[qi * dims..][..dims], &r[ri * dims..][..dims]),
                    dims as f32
                ));
            }

            let ri8 = rng.i8s(nr * dims);
            k.dot_f32_i8_many(&q, &ri8, dims, &mut got);
            s.dot_f32_i8_many(&q, &ri8, dims, &mut want);
            for i in 0..nq * nr {
                assert!(
                    close(got[i], want[i], 128.0 * dims as f32),
                    "{:?} dot_f32_i8_many {nq}x{nr}x{dims} [{i}]",
                    k.level()
                );
            }

            let nb = dims.div_ceil(8);
            let (qb, rb) = (rng.u8s(nq * nb), rng.u8s(nr * nb));
            let mut hg = vec![0u32; nq * nr];
            let mut hw = vec![0u32; nq * nr];
            k.hamming_many(&qb, &rb, nb, &mut hg);
            s.hamming_many(&qb, &rb, nb, &mut hw);
            assert_eq!(hg, hw, "{:?} hamming_many {nq}x{nr}x{nb}", k.level());
        }
        // Rows wider than one 64-byte AVX-512 chunk, with a partial last chunk, through every tile shape.
        for (nq, nr) in [(1, 5), (3, 5), (4, 8), (6, 9)] {
            let (qb, rb) = (rng.u8s(nq * 150), rng.u8s(nr * 150));
            let mut hg = vec![0u32; nq * nr];
            let mut hw = vec![0u32; nq * nr];
            k.hamming_many(&qb, &rb, 150, &mut hg);
            s.hamming_many(&qb, &rb, 150, &mut hw);
            assert_eq!(hg, hw, "{:?} hamming_many wide rows {nq}x{nr}", k.level());
        }
    }
}

#[test]
fn level_names_parse() {
    for l in [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512] {
        assert_eq!(l.to_string().parse::<SimdLevel>().unwrap(), l);
    }
    assert!("sse9".parse::<SimdLevel>().is_err());
}

#[test]
fn env_override_is_honoured_in_a_child_process() {
    // `active()` reads EMBEDKIT_SIMD once per process, so check it in a fresh one: this test binary re-run
    // with a filter selecting only `print_active_level`.
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "print_active_level",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("EMBEDKIT_SIMD", "scalar")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("ACTIVE=scalar"), "{text}");
}

#[test]
fn print_active_level() {
    eprintln!("ACTIVE={}", embedkit_vectors::simd::active().level());
}
