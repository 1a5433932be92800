//! Vectorised elementwise kernels: RMSNorm, softmax and SwiGLU, with an eight-lane `exp`.
//!
//! They compute what `ops::scalar` computes, in the same order per element; only `exp`
//! differs (a polynomial within about 2 ulp of libm's, as ggml's own vectorised `expf`),
//! and the f64 sums run in four lanes.
//!
//! # Safety
//! Every function needs AVX2 and FMA (the wrappers in `x86/mod.rs` are the way in).

use core::arch::x86_64::*;

/// `e^x` for eight lanes: `2^n · e^r` with `n = round(x / ln 2)` and a degree-6 polynomial
/// for `e^r` on `|r| ≤ ln 2 / 2` (Cephes' `expf` coefficients). Overflows to infinity and
/// underflows to zero like `expf`; NaN stays NaN.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp8(x: __m256) -> __m256 {
    let xc = _mm256_max_ps(
        _mm256_min_ps(x, _mm256_set1_ps(89.0)),
        _mm256_set1_ps(-104.0),
    );
    let n = _mm256_round_ps(
        _mm256_mul_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    // r = x - n ln 2, with ln 2 split so that n · ln2_hi is exact.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let y = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    // 2^n as two factors 2^(n/2) 2^(n - n/2), each a normal float for n in -150..=129.
    let ni = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32(ni, 1);
    let n2 = _mm256_sub_epi32(ni, n1);
    let pow2 = |k: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_add_epi32(k, _mm256_set1_epi32(127)),
            23,
        ))
    };
    let e = _mm256_mul_ps(_mm256_mul_ps(y, pow2(n1)), pow2(n2));
    let nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    _mm256_blendv_ps(e, x, nan)
}

/// Applies `f` to `x` eight lanes at a time, the tail through a zero-padded copy.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn map8(x: &mut [f32], mut f: impl FnMut(__m256, usize) -> __m256) {
    let main = x.len() / 8 * 8;
    for i in (0..main).step_by(8) {
        let v = _mm256_loadu_ps(x.as_ptr().add(i));
        _mm256_storeu_ps(x.as_mut_ptr().add(i), f(v, i));
    }
    if main < x.len() {
        let mut buf = [0.0f32; 8];
        let tail = &mut x[main..];
        buf[..tail.len()].copy_from_slice(tail);
        let v = f(_mm256_loadu_ps(buf.as_ptr()), main);
        _mm256_storeu_ps(buf.as_mut_ptr(), v);
        tail.copy_from_slice(&buf[..tail.len()]);
    }
}

/// Eight values from `y` at `i`, zeros past its end.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_padded(y: &[f32], i: usize) -> __m256 {
    if i + 8 <= y.len() {
        _mm256_loadu_ps(y.as_ptr().add(i))
    } else {
        let mut buf = [0.0f32; 8];
        buf[..y.len() - i].copy_from_slice(&y[i..]);
        _mm256_loadu_ps(buf.as_ptr())
    }
}

/// `v` with the lanes at `i + k >= len` set to zero: the padding of `map8`'s last chunk.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn zero_past_end(v: __m256, i: usize, len: usize) -> __m256 {
    if i + 8 <= len {
        return v;
    }
    let keep = _mm256_cmpgt_epi32(
        _mm256_set1_epi32((len - i) as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    _mm256_and_ps(v, _mm256_castsi256_ps(keep))
}

/// `Σ v` of eight f32 lanes added into four f64 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn add_f64(acc: __m256d, v: __m256) -> __m256d {
    let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    let hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    _mm256_add_pd(acc, _mm256_add_pd(lo, hi))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum_f64(v: __m256d) -> f64 {
    let mut b = [0.0f64; 4];
    _mm256_storeu_pd(b.as_mut_ptr(), v);
    (b[0] + b[1]) + (b[2] + b[3])
}

/// `gate = gate / (1 + e^-gate) * up`. `up.len() >= gate.len()`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
    let one = _mm256_set1_ps(1.0);
    let sign = _mm256_set1_ps(-0.0);
    map8(gate, |g, i| {
        let e = exp8(_mm256_xor_ps(g, sign));
        let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_mul_ps(s, load_padded(up, i))
    });
}

/// In-place softmax; the sum of the exponentials in f64.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn softmax(x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    let main = x.len() / 8 * 8;
    for i in (0..main).step_by(8) {
        m = _mm256_max_ps(m, _mm256_loadu_ps(x.as_ptr().add(i)));
    }
    let mut b = [0.0f32; 8];
    _mm256_storeu_ps(b.as_mut_ptr(), m);
    let max = b
        .iter()
        .chain(&x[main..])
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let (maxv, len) = (_mm256_set1_ps(max), x.len());
    let mut sum = _mm256_setzero_pd();
    map8(x, |v, i| {
        let e = exp8(_mm256_sub_ps(v, maxv));
        // Lanes past the end (zero padding) must not count.
        let e = zero_past_end(e, i, len);
        sum = add_f64(sum, e);
        e
    });
    let inv = _mm256_set1_ps((1.0 / hsum_f64(sum)) as f32);
    map8(x, |v, _| _mm256_mul_ps(v, inv));
}

/// `x[i] = e^(x[i] - max)`, returning the sum (f32: blocks of keys are short). Masked
/// scores (−∞) give exactly 0, as `expf` does (`exp8` would give its clamped 2⁻¹⁵⁰).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp_sum(x: &mut [f32], max: f32) -> f32 {
    let (maxv, len) = (_mm256_set1_ps(max), x.len());
    let masked = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut sum = _mm256_setzero_ps();
    map8(x, |v, i| {
        let e = exp8(_mm256_sub_ps(v, maxv));
        let e = _mm256_and_ps(e, _mm256_cmp_ps(v, masked, _CMP_NEQ_OQ));
        let e = zero_past_end(e, i, len);
        sum = _mm256_add_ps(sum, e);
        e
    });
    super::hsum(sum)
}

/// RMSNorm, the squares summed in f64. `w` and `out` at least as long as `x`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let mut sum = _mm256_setzero_pd();
    let main = x.len() / 8 * 8;
    for i in (0..main).step_by(8) {
        let v = _mm256_loadu_ps(x.as_ptr().add(i));
        sum = add_f64(sum, _mm256_mul_ps(v, v));
    }
    let mut s = hsum_f64(sum);
    for &v in &x[main..] {
        s += (v * v) as f64;
    }
    let scale = 1.0 / ((s / x.len() as f64) as f32 + eps).sqrt();
    let sv = _mm256_set1_ps(scale);
    for i in (0..main).step_by(8) {
        let v = _mm256_loadu_ps(x.as_ptr().add(i));
        let wv = _mm256_loadu_ps(w.as_ptr().add(i));
        _mm256_storeu_ps(
            out.as_mut_ptr().add(i),
            _mm256_mul_ps(_mm256_mul_ps(v, sv), wv),
        );
    }
    for i in main..x.len() {
        out[i] = x[i] * scale * w[i];
    }
}

/// `out[j] = q · rows[j·stride..]` (over `q.len()` values), eight rows at a time so that
/// each load of `q` serves eight keys and eight FMA chains run side by side.
///
/// # Safety
/// AVX2/FMA, and the rows inside `rows` (`ops::dot_rows` checks it).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_rows(q: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
    let (dim, main) = (q.len(), q.len() / 8 * 8);
    let (pq, pr) = (q.as_ptr(), rows.as_ptr());
    let tail = |j: usize| -> f32 { (main..dim).map(|d| q[d] * rows[j * stride + d]).sum() };
    let mut j = 0;
    while j + 8 <= out.len() {
        let mut acc = [_mm256_setzero_ps(); 8];
        for d in (0..main).step_by(8) {
            let qv = _mm256_loadu_ps(pq.add(d));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(pr.add((j + r) * stride + d)), *a);
            }
        }
        // Eight horizontal sums at once: pairwise adds, then the two 128-bit halves.
        let t0 = _mm256_hadd_ps(acc[0], acc[1]);
        let t1 = _mm256_hadd_ps(acc[2], acc[3]);
        let t2 = _mm256_hadd_ps(acc[4], acc[5]);
        let t3 = _mm256_hadd_ps(acc[6], acc[7]);
        let (u0, u1) = (_mm256_hadd_ps(t0, t1), _mm256_hadd_ps(t2, t3));
        let s = _mm256_add_ps(
            _mm256_permute2f128_ps(u0, u1, 0x20),
            _mm256_permute2f128_ps(u0, u1, 0x31),
        );
        _mm256_storeu_ps(out.as_mut_ptr().add(j), s);
        if main < dim {
            for r in 0..8 {
                out[j + r] += tail(j + r);
            }
        }
        j += 8;
    }
    while j < out.len() {
        let mut acc = _mm256_setzero_ps();
        for d in (0..main).step_by(8) {
            let x = _mm256_loadu_ps(pq.add(d));
            acc = _mm256_fmadd_ps(x, _mm256_loadu_ps(pr.add(j * stride + d)), acc);
        }
        out[j] = super::hsum(acc) + tail(j);
        j += 1;
    }
}

/// `y += Σ_j p[j] · rows[j·stride..]` (over `y.len()` values), 64 values of `y` held in
/// registers while every row passes, so eight FMA chains run side by side.
///
/// # Safety
/// AVX2/FMA, and the rows inside `rows` (`ops::axpy_rows` checks it).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn axpy_rows(p: &[f32], rows: &[f32], stride: usize, y: &mut [f32]) {
    let (dim, main) = (y.len(), y.len() / 8 * 8);
    let (py, pr) = (y.as_mut_ptr(), rows.as_ptr());
    let mut d = 0;
    while d + 64 <= main {
        let mut acc = [_mm256_setzero_ps(); 8];
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm256_loadu_ps(py.add(d + 8 * r));
        }
        for (j, &pj) in p.iter().enumerate() {
            let pv = _mm256_set1_ps(pj);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(pv, _mm256_loadu_ps(pr.add(j * stride + d + 8 * r)), *a);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(py.add(d + 8 * r), *a);
        }
        d += 64;
    }
    while d < main {
        let mut a = _mm256_loadu_ps(py.add(d));
        for (j, &pj) in p.iter().enumerate() {
            a = _mm256_fmadd_ps(
                _mm256_set1_ps(pj),
                _mm256_loadu_ps(pr.add(j * stride + d)),
                a,
            );
        }
        _mm256_storeu_ps(py.add(d), a);
        d += 8;
    }
    for d in main..dim {
        for (j, &pj) in p.iter().enumerate() {
            y[d] += pj * rows[j * stride + d];
        }
    }
}
