/// RMSNorm: `out = x / sqrt(mean(x²) + eps) * w`, the squares summed in f64 as ggml does.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let scale = 1.0 / ((sum / x.len() as f64) as f32 + eps).sqrt();
    for ((o, &v), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * wi;
    }
}

/// In-place softmax, the exponentials summed in f64.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `gate = silu(gate) * up`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `out[j] = Σ_d q[d] · rows[j·stride + d]`, each in eight independent sums (as the
/// vector versions add).
pub fn dot_rows(q: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        let r = &rows[j * stride..j * stride + q.len()];
        let mut acc = [0.0f32; 8];
        let (cq, cr) = (q.chunks_exact(8), r.chunks_exact(8));
        let tail: f32 = cq
            .remainder()
            .iter()
            .zip(cr.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in cq.zip(cr) {
            for i in 0..8 {
                acc[i] += x[i] * y[i];
            }
        }
        *o = acc.iter().sum::<f32>() + tail;
    }
}

/// `y[d] += Σ_j p[j] · rows[j·stride + d]`.
pub fn axpy_rows(p: &[f32], rows: &[f32], stride: usize, y: &mut [f32]) {
    for (j, &pj) in p.iter().enumerate() {
        for (b, &a) in y.iter_mut().zip(&rows[j * stride..]) {
            *b += pj * a;
        }
    }
}

/// `x[i] = e^(x[i] - max)`, returning the sum.
pub fn exp_sum(x: &mut [f32], max: f32) -> f32 {
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    sum
}

/// √(2/π) and the cubic's coefficient, of GELU's tanh approximation.
pub(crate) const SQRT_2_OVER_PI: f32 = 0.797_884_6;
pub(crate) const GELU_COEF_A: f32 = 0.044_715;

/// `gate = gelu(gate) · up`, GELU by its tanh approximation computed as ggml does: the input
/// rounded to f16 and the result read back as f16 (ggml looks it up in an f16 table).
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    use half::f16;
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            let x = f16::from_f32(x).to_f32();
            let y = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh());
            f16::from_f32(y).to_f32() * u
        };
    }
}

/// Rotates each head of `x` (heads of `head_dim` values) by the angles, pairing adjacent
/// values `(x[2i], x[2i+1])`: ggml's "normal" RoPE, used by llama-family models.
pub fn rope_norm(x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (pair, &(c, s)) in head.chunks_exact_mut(2).zip(cos_sin) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c - b * s;
            pair[1] = a * s + b * c;
        }
    }
}

/// Rotates each head pairing `x[i]` with `x[i + n]`, `n = cos_sin.len()`: ggml's "NeoX" RoPE
/// (Gemma, Qwen).
pub fn rope_neox(x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
    let half = cos_sin.len();
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(c, s)) in cos_sin.iter().enumerate() {
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * c - b * s;
            head[i + half] = a * s + b * c;
        }
    }
}
