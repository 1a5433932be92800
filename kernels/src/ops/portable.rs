//! The elementwise kernels written once with the `wide` crate's four-lane `f32x4`: NEON on
//! aarch64 (where NEON is baseline, so `wide`'s compile-time choice of instructions is the
//! right one), SSE2 on x86-64 (this project's x86-64 build enables no more at compile time).
//!
//! aarch64 runs these (`arm/ops.rs` adds RoPE, which needs lane shuffles `wide` does not
//! have). x86-64 keeps its AVX2 intrinsics (`x86/ops.rs`): `wide` compiled for the baseline
//! target is four SSE2 lanes without FMA, and loses to them (the figures are in the README,
//! from `cargo bench -p tern-benches --bench ops`). x86-64 runs only [`geglu`] from here,
//! which beats the scalar version there too.
//!
//! They compute what [`super::scalar`] computes, in the same order per element; only `exp`
//! differs (the polynomial of `x86/ops.rs`, within about 2 ulp of libm's), and sums run in
//! four or eight lanes. `wide` 0.7 fuses `mul_add` only on x86-64 with FMA enabled at compile
//! time, so [`fma`] reaches NEON's `fmla` itself.

use wide::{f32x4, i32x4, CmpGe, CmpGt, CmpLe, CmpLt, CmpNe};

use crate::kernel::OpKernels;

/// These kernels as a set, RoPE from [`super::scalar`] (`wide` has no lane shuffles).
pub const OPS: OpKernels = OpKernels {
    rms_norm,
    softmax,
    swiglu,
    dot_rows,
    axpy_rows,
    exp_sum,
    geglu,
    rope_norm: super::scalar::rope_norm,
    rope_neox: super::scalar::rope_neox,
};

/// `a · b + c`, fused where the target has it at compile time (aarch64: `fmla`).
#[inline(always)]
fn fma(a: f32x4, b: f32x4, c: f32x4) -> f32x4 {
    #[cfg(target_arch = "aarch64")]
    {
        use core::arch::aarch64::{float32x4_t, vfmaq_f32};
        // SAFETY: `f32x4` is a `repr(C)` wrapper of one `float32x4_t` on aarch64 (NEON is
        // baseline there), so both are the same 16 bytes; `vfmaq_f32` needs only NEON.
        unsafe {
            let (a, b, c): (float32x4_t, float32x4_t, float32x4_t) = (
                core::mem::transmute::<f32x4, float32x4_t>(a),
                core::mem::transmute::<f32x4, float32x4_t>(b),
                core::mem::transmute::<f32x4, float32x4_t>(c),
            );
            core::mem::transmute::<float32x4_t, f32x4>(vfmaq_f32(c, a, b))
        }
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        a.mul_add(b, c)
    }
}

/// Four values at `x[i..]`.
#[inline(always)]
fn load(x: &[f32], i: usize) -> f32x4 {
    f32x4::new(x[i..i + 4].try_into().expect("four values"))
}

/// Stores four values at `x[i..]`.
#[inline(always)]
fn store(x: &mut [f32], i: usize, v: f32x4) {
    x[i..i + 4].copy_from_slice(&v.to_array());
}

/// `e^x` for four lanes: `2^n · e^r` with `n = round(x / ln 2)` and a degree-6 polynomial
/// for `e^r` on `|r| ≤ ln 2 / 2` (Cephes' `expf` coefficients), as `x86/ops.rs`'s `exp8`.
/// Overflows to infinity and underflows to zero like `expf`; NaN stays NaN. (`wide`'s own
/// `exp` returns 0 for every `|x| ≥ 87.3`, infinity included.)
#[inline(always)]
pub fn exp4(x: f32x4) -> f32x4 {
    let xc = x
        .fast_min(f32x4::splat(89.0))
        .fast_max(f32x4::splat(-104.0));
    let ni = (xc * f32x4::splat(std::f32::consts::LOG2_E)).fast_round_int();
    let n = f32x4::from_i32x4(ni);
    // r = x - n ln 2, with ln 2 split so that n · ln2_hi is exact.
    let r = fma(n, f32x4::splat(-0.693_359_4), xc);
    let r = fma(n, f32x4::splat(2.121_944_4e-4), r);
    let mut p = f32x4::splat(1.987_569_1e-4);
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = fma(p, r, f32x4::splat(c));
    }
    let y = fma(p, r * r, r + f32x4::splat(1.0));
    // 2^n as two factors 2^(n/2) 2^(n - n/2), each a normal float for n in -150..=129.
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let pow2 = |k: i32x4| -> f32x4 { bytemuck::cast((k + i32x4::splat(127)) << 23) };
    let e = y * pow2(n1) * pow2(n2);
    x.is_nan().blend(x, e)
}

/// Applies `f` to `x` four lanes at a time (with the index of the first), the tail through a
/// zero-padded copy.
#[inline(always)]
fn map4(x: &mut [f32], mut f: impl FnMut(f32x4, usize) -> f32x4) {
    let main = x.len() / 4 * 4;
    for i in (0..main).step_by(4) {
        let v = f(load(x, i), i);
        store(x, i, v);
    }
    if main < x.len() {
        let mut buf = [0.0f32; 4];
        let tail = &mut x[main..];
        buf[..tail.len()].copy_from_slice(tail);
        let v = f(f32x4::new(buf), main).to_array();
        tail.copy_from_slice(&v[..tail.len()]);
    }
}

/// Four values from `y` at `i`, zeros past its end.
#[inline(always)]
fn load_padded(y: &[f32], i: usize) -> f32x4 {
    if i + 4 <= y.len() {
        load(y, i)
    } else {
        let mut buf = [0.0f32; 4];
        buf[..y.len() - i].copy_from_slice(&y[i..]);
        f32x4::new(buf)
    }
}

/// `v` with the lanes at `i + k >= len` set to zero: the padding of `map4`'s last chunk.
#[inline(always)]
fn zero_past_end(v: f32x4, i: usize, len: usize) -> f32x4 {
    if i + 4 <= len {
        return v;
    }
    let keep = i32x4::splat((len - i) as i32).cmp_gt(i32x4::new([0, 1, 2, 3]));
    v & bytemuck::cast::<i32x4, f32x4>(keep)
}

/// Adds the four lanes of `v` to four f64 sums.
#[inline(always)]
fn add_f64(acc: &mut [f64; 4], v: f32x4) {
    for (a, x) in acc.iter_mut().zip(v.to_array()) {
        *a += x as f64;
    }
}

/// `gate = gate / (1 + e^-gate) * up`. `up.len() >= gate.len()`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    assert!(up.len() >= gate.len(), "swiglu: sizes");
    let one = f32x4::splat(1.0);
    map4(gate, |g, i| g / (one + exp4(-g)) * load_padded(up, i));
}

/// In-place softmax; the sum of the exponentials in f64.
pub fn softmax(x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let main = x.len() / 4 * 4;
    let mut m = f32x4::splat(f32::NEG_INFINITY);
    for i in (0..main).step_by(4) {
        m = m.fast_max(load(x, i));
    }
    let max = m
        .to_array()
        .iter()
        .chain(&x[main..])
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let (maxv, len) = (f32x4::splat(max), x.len());
    let mut sum = [0.0f64; 4];
    map4(x, |v, i| {
        // Lanes past the end (zero padding) must not count.
        let e = zero_past_end(exp4(v - maxv), i, len);
        add_f64(&mut sum, e);
        e
    });
    let inv = f32x4::splat((1.0 / ((sum[0] + sum[1]) + (sum[2] + sum[3]))) as f32);
    map4(x, |v, _| v * inv);
}

/// `x[i] = e^(x[i] - max)`, returning the sum (f32: blocks of keys are short). Masked
/// scores (−∞) give exactly 0, as `expf` does (`exp4` would give its clamped 2⁻¹⁵⁰).
pub fn exp_sum(x: &mut [f32], max: f32) -> f32 {
    let (maxv, len) = (f32x4::splat(max), x.len());
    let masked = f32x4::splat(f32::NEG_INFINITY);
    let mut sum = f32x4::splat(0.0);
    map4(x, |v, i| {
        let e = exp4(v - maxv) & v.cmp_ne(masked);
        let e = zero_past_end(e, i, len);
        sum += e;
        e
    });
    sum.reduce_add()
}

/// RMSNorm, the squares summed in f64. `w` and `out` at least as long as `x`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    assert!(w.len() >= n && out.len() >= n, "rms_norm: sizes");
    let main = n / 4 * 4;
    let mut acc = [0.0f64; 4];
    for i in (0..main).step_by(4) {
        let v = load(x, i);
        add_f64(&mut acc, v * v);
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for &v in &x[main..] {
        s += (v * v) as f64;
    }
    let scale = 1.0 / ((s / n as f64) as f32 + eps).sqrt();
    let sv = f32x4::splat(scale);
    for i in (0..main).step_by(4) {
        store(out, i, load(x, i) * sv * load(w, i));
    }
    for i in main..n {
        out[i] = x[i] * scale * w[i];
    }
}

/// `out[j] = q · rows[j·stride..]` (over `q.len()` values), four rows at a time so that each
/// load of `q` serves four keys, in two chains per row (eight side by side).
pub fn dot_rows(q: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
    let n = out.len();
    let (dim, main) = (q.len(), q.len() / 8 * 8);
    assert!(
        n == 0 || (dim <= stride && (n - 1) * stride + dim <= rows.len()),
        "dot_rows: sizes"
    );
    let tail = |j: usize| -> f32 { (main..dim).map(|d| q[d] * rows[j * stride + d]).sum() };
    let zero = f32x4::splat(0.0);
    let mut j = 0;
    while j + 4 <= n {
        let r: [&[f32]; 4] = std::array::from_fn(|k| &rows[(j + k) * stride..][..dim]);
        let (mut a, mut b) = ([zero; 4], [zero; 4]);
        for d in (0..main).step_by(8) {
            let (q0, q1) = (load(q, d), load(q, d + 4));
            for k in 0..4 {
                a[k] = fma(q0, load(r[k], d), a[k]);
                b[k] = fma(q1, load(r[k], d + 4), b[k]);
            }
        }
        for k in 0..4 {
            out[j + k] = (a[k] + b[k]).reduce_add() + tail(j + k);
        }
        j += 4;
    }
    while j < n {
        let r = &rows[j * stride..][..dim];
        let (mut a, mut b) = (zero, zero);
        for d in (0..main).step_by(8) {
            a = fma(load(q, d), load(r, d), a);
            b = fma(load(q, d + 4), load(r, d + 4), b);
        }
        out[j] = (a + b).reduce_add() + tail(j);
        j += 1;
    }
}

/// `y += Σ_j p[j] · rows[j·stride..]` (over `y.len()` values), 32 values of `y` held in
/// registers while every row passes, so eight FMA chains run side by side.
pub fn axpy_rows(p: &[f32], rows: &[f32], stride: usize, y: &mut [f32]) {
    let (dim, n) = (y.len(), p.len());
    assert!(
        n == 0 || (dim <= stride && (n - 1) * stride + dim <= rows.len()),
        "axpy_rows: sizes"
    );
    let main = dim / 4 * 4;
    let mut d = 0;
    while d + 32 <= main {
        let mut acc: [f32x4; 8] = std::array::from_fn(|k| load(y, d + 4 * k));
        for (j, &pj) in p.iter().enumerate() {
            let (pv, r) = (f32x4::splat(pj), &rows[j * stride + d..][..32]);
            for (k, a) in acc.iter_mut().enumerate() {
                *a = fma(pv, load(r, 4 * k), *a);
            }
        }
        for (k, a) in acc.iter().enumerate() {
            store(y, d + 4 * k, *a);
        }
        d += 32;
    }
    while d < main {
        let mut a = load(y, d);
        for (j, &pj) in p.iter().enumerate() {
            a = fma(f32x4::splat(pj), load(rows, j * stride + d), a);
        }
        store(y, d, a);
        d += 4;
    }
    for d in main..dim {
        for (j, &pj) in p.iter().enumerate() {
            y[d] += pj * rows[j * stride + d];
        }
    }
}

/// Each lane rounded to the nearest `f16` value (ties to even) and widened back, as
/// `half::f16::from_f32(x).to_f32()` does, for `|x| < 65504` (beyond, `f16` is infinite).
#[inline(always)]
fn round_f16(x: f32x4) -> f32x4 {
    let bits: i32x4 = bytemuck::cast(x);
    // Normal f16 range: drop 13 of the 23 mantissa bits, rounding to nearest even (a carry
    // into the exponent is the right result).
    let odd = (bits >> 13) & i32x4::splat(1);
    let normal: f32x4 = bytemuck::cast((bits + i32x4::splat(0x0FFF) + odd) & i32x4::splat(!0x1FFF));
    // Subnormal f16 range (|x| < 2⁻¹⁴): multiples of 2⁻²⁴, the spacing of f32 near 0.5.
    let half = f32x4::splat(0.5);
    let sub = ((x.abs() + half) - half).copysign(x);
    x.abs()
        .cmp_lt(f32x4::splat(6.103_515_6e-5))
        .blend(sub, normal)
}

/// `gate = gelu(gate) · up`, GELU by its tanh approximation as [`super::scalar::geglu`]
/// computes it (the input and the result rounded to f16, as ggml's f16 table does), with
/// `1 + tanh z = 2 / (1 + e^(-2z))`. Where `tanh z` is near −1 the scalar `1 + tanh z` keeps
/// only what f32 holds of `tanh z` near −1 (steps of 2⁻²⁴); `(q − 1) + 1` rounds alike, so
/// the results agree there too. `up.len() >= gate.len()`.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    assert!(up.len() >= gate.len(), "geglu: sizes");
    let (lo, hi) = (f32x4::splat(-10.0), f32x4::splat(10.0));
    let s = f32x4::splat(super::scalar::SQRT_2_OVER_PI);
    let a = f32x4::splat(super::scalar::GELU_COEF_A);
    let (half, one, two) = (f32x4::splat(0.5), f32x4::splat(1.0), f32x4::splat(2.0));
    map4(gate, |g, i| {
        let x = round_f16(g);
        // z as the scalar version rounds it: (√(2/π) x) (1 + (a x) x).
        let z = s * x * (one + a * x * x);
        let q = two / (one + exp4(-(z + z)));
        let y = round_f16(half * x * ((q - one) + one)) * load_padded(up, i);
        let y = g.cmp_ge(hi).blend(g * load_padded(up, i), y);
        let y = g.cmp_le(lo).blend(f32x4::splat(0.0), y);
        g.is_nan().blend(g, y)
    });
}
