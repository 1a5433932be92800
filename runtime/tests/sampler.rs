//! The sampler against hand-computed cases and known distributions.

use tern::sampler::{argmax, Pcg32, Sampler, SamplerConfig};

/// Sampling with only the given filters (temperature 1, nothing else on).
fn plain(seed: u64) -> SamplerConfig {
    SamplerConfig {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        repeat_last_n: 0,
        seed,
    }
}

/// Logits whose softmax is `probs`.
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

/// One draw, then the surviving `(id, probability)` pairs.
fn survivors(cfg: SamplerConfig, logits: &[f32]) -> Vec<(u32, f32)> {
    let mut s = Sampler::new(cfg);
    s.sample(&mut logits.to_vec(), &[]);
    s.last_candidates().collect()
}

fn assert_dist(got: &[(u32, f32)], want: &[(u32, f64)]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (&(id, p), &(wid, wp)) in got.iter().zip(want) {
        assert_eq!(id, wid, "{got:?} vs {want:?}");
        assert!((f64::from(p) - wp).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}

/// p = [0.15, 0.5, 0.05, 0.3] over ids 0..4: sorted, ids 1 (0.5), 3 (0.3), 0 (0.15), 2 (0.05).
const P4: [f64; 4] = [0.15, 0.5, 0.05, 0.3];

#[test]
fn pcg32_matches_the_reference_implementation() {
    // pcg32_srandom_r(&rng, 42, 54) in O'Neill's pcg-c demo prints these.
    let mut rng = Pcg32::new(42, 54);
    let got: Vec<u32> = (0..6).map(|_| rng.next_u32()).collect();
    assert_eq!(
        got,
        [0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e]
    );
    let mut copy = Pcg32::from_state(rng.state());
    assert_eq!(copy.next_u32(), rng.next_u32());
    for _ in 0..1000 {
        let x = rng.next_f64();
        assert!((0.0..1.0).contains(&x));
    }
}

#[test]
fn greedy_is_argmax_with_ties_to_the_lowest_id() {
    assert_eq!(argmax(&[1.0, 3.0, 2.0, 3.0]), 1);
    assert_eq!(argmax(&[f32::NAN, 0.5, 0.5]), 1);
    assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
    let mut s = Sampler::new(SamplerConfig::default());
    assert_eq!(s.config().temperature, 0.0);
    assert_eq!(s.sample(&mut [1.0, 3.0, 2.0, 3.0], &[]), 1);
    assert_eq!(s.last_candidates().count(), 0);
    let mut negative = Sampler::new(SamplerConfig {
        temperature: -1.0,
        ..plain(5)
    });
    assert_eq!(negative.sample(&mut [0.0, -2.0, 7.5, 7.0], &[]), 2);
}

#[test]
fn top_k_of_one_is_greedy() {
    let mut gen = Pcg32::new(7, 1);
    let mut s = Sampler::new(SamplerConfig {
        temperature: 1.3,
        top_k: 1,
        ..plain(99)
    });
    for _ in 0..50 {
        let logits: Vec<f32> = (0..1000)
            .map(|_| (gen.next_f64() * 20.0 - 10.0) as f32)
            .collect();
        let want = argmax(&logits);
        assert_eq!(s.sample(&mut logits.clone(), &[]), want);
    }
}

#[test]
fn top_k_keeps_the_k_best_lowest_ids_on_ties() {
    let got = survivors(
        SamplerConfig {
            top_k: 2,
            ..plain(0)
        },
        &logits_of(&P4),
    );
    assert_dist(&got, &[(1, 0.5 / 0.8), (3, 0.3 / 0.8)]);
    let got = survivors(
        SamplerConfig {
            top_k: 2,
            ..plain(0)
        },
        &[1.0, 1.0, 1.0, 0.0],
    );
    assert_dist(&got, &[(0, 0.5), (1, 0.5)]);
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    let l = logits_of(&P4);
    let top_p = |p| {
        survivors(
            SamplerConfig {
                top_p: p,
                ..plain(0)
            },
            &l,
        )
    };
    // 0.5 < 0.7 <= 0.5 + 0.3
    assert_dist(&top_p(0.7), &[(1, 0.5 / 0.8), (3, 0.3 / 0.8)]);
    // 0.8 < 0.9 <= 0.95
    assert_dist(
        &top_p(0.9),
        &[(1, 0.5 / 0.95), (3, 0.3 / 0.95), (0, 0.15 / 0.95)],
    );
    assert_dist(&top_p(0.4), &[(1, 1.0)]);
    assert_dist(&top_p(0.0), &[(1, 1.0)]);
    assert_dist(&top_p(1.0), &[(1, 0.5), (3, 0.3), (0, 0.15), (2, 0.05)]);
}

#[test]
fn min_p_drops_tokens_below_a_fraction_of_the_best() {
    let l = logits_of(&P4);
    let min_p = |m| {
        survivors(
            SamplerConfig {
                min_p: m,
                ..plain(0)
            },
            &l,
        )
    };
    // threshold 0.125: 0.15 stays, 0.05 goes
    assert_dist(
        &min_p(0.25),
        &[(1, 0.5 / 0.95), (3, 0.3 / 0.95), (0, 0.15 / 0.95)],
    );
    // threshold 0.2
    assert_dist(&min_p(0.4), &[(1, 0.5 / 0.8), (3, 0.3 / 0.8)]);
    // threshold 0.305
    assert_dist(&min_p(0.61), &[(1, 1.0)]);
}

#[test]
fn temperature_comes_after_the_filters() {
    // llama.cpp's order: top-p sees the temperature-1 distribution, so even a high
    // temperature keeps only ids 1 and 3, re-weighted as p^(1/T).
    let t = 10.0;
    let got = survivors(
        SamplerConfig {
            temperature: t as f32,
            top_p: 0.7,
            ..plain(0)
        },
        &logits_of(&P4),
    );
    let (a, b) = (0.5f64.powf(1.0 / t), 0.3f64.powf(1.0 / t));
    assert_dist(&got, &[(1, a / (a + b)), (3, b / (a + b))]);
    // Same for min-p.
    let got = survivors(
        SamplerConfig {
            temperature: t as f32,
            min_p: 0.4,
            ..plain(0)
        },
        &logits_of(&P4),
    );
    assert_dist(&got, &[(1, a / (a + b)), (3, b / (a + b))]);
}

#[test]
fn repeat_penalty_follows_llama_cpp() {
    let cfg = SamplerConfig {
        temperature: 0.0,
        repeat_penalty: 2.0,
        repeat_last_n: 3,
        ..plain(0)
    };
    // Window = last 3 tokens = [1, 1, 3]: each distinct token penalised once; 0 is outside;
    // 99 is not in the vocabulary and ignored.
    let history = [0, 99, 1, 1, 3];
    let mut logits = [2.0, -1.0, 0.5, 3.0, 0.0];
    let mut s = Sampler::new(cfg);
    assert_eq!(s.sample(&mut logits, &history), 0);
    assert_eq!(logits, [2.0, -2.0, 0.5, 1.5, 0.0]);

    // A longer window reaches token 0 too.
    let mut logits = [2.0, -1.0, 0.5, 3.0, 0.0];
    let mut s = Sampler::new(SamplerConfig {
        repeat_last_n: 5,
        ..cfg
    });
    assert_eq!(s.sample(&mut logits, &history), 3);
    assert_eq!(logits, [1.0, -2.0, 0.5, 1.5, 0.0]);

    // Zero window or penalty 1: untouched.
    for off in [
        SamplerConfig {
            repeat_last_n: 0,
            ..cfg
        },
        SamplerConfig {
            repeat_penalty: 1.0,
            ..cfg
        },
    ] {
        let mut logits = [2.0, -1.0, 0.5, 3.0, 0.0];
        assert_eq!(Sampler::new(off).sample(&mut logits, &history), 3);
        assert_eq!(logits, [2.0, -1.0, 0.5, 3.0, 0.0]);
    }
}

/// Logits for step `i` of a run: varied, so every draw matters.
fn step_logits(i: usize) -> Vec<f32> {
    (0..64)
        .map(|j| (((i * 31 + j * 17) % 23) as f32) * 0.25)
        .collect()
}

fn run(s: &mut Sampler, steps: usize) -> Vec<u32> {
    let mut history = Vec::new();
    for i in 0..steps {
        let t = s.sample(&mut step_logits(i), &history);
        history.push(t);
    }
    history
}

#[test]
fn same_seed_same_tokens_and_state_can_be_restored() {
    let cfg = SamplerConfig {
        temperature: 0.9,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.05,
        repeat_penalty: 1.1,
        repeat_last_n: 64,
        seed: 1234,
    };
    let a = run(&mut Sampler::new(cfg), 300);
    let b = run(&mut Sampler::new(cfg), 300);
    assert_eq!(a, b);
    let c = run(&mut Sampler::new(SamplerConfig { seed: 1235, ..cfg }), 300);
    assert_ne!(a, c);

    // Save the generator mid-run, restore it into a fresh sampler: same continuation.
    let cfg = plain(77);
    let mut s = Sampler::new(cfg);
    for i in 0..100 {
        s.sample(&mut step_logits(i), &[]);
    }
    let saved = s.rng_state();
    let rest: Vec<u32> = (100..200)
        .map(|i| s.sample(&mut step_logits(i), &[]))
        .collect();
    let mut r = Sampler::new(SamplerConfig { seed: 0, ..cfg });
    r.set_rng_state(saved);
    assert_eq!(r.rng_state(), saved);
    let again: Vec<u32> = (100..200)
        .map(|i| r.sample(&mut step_logits(i), &[]))
        .collect();
    assert_eq!(rest, again);
}

/// Draws `n` tokens and checks the frequencies against `want`: every count within 4.5
/// standard deviations, and Pearson's chi-square below its 99.9% quantile.
fn check_frequencies(cfg: SamplerConfig, logits: &[f32], want: &[f64], n: usize) {
    let mut s = Sampler::new(cfg);
    let mut counts = vec![0usize; want.len()];
    for _ in 0..n {
        counts[s.sample(&mut logits.to_vec(), &[]) as usize] += 1;
    }
    let mut chi2 = 0.0;
    for (&c, &p) in counts.iter().zip(want) {
        let expected = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (c as f64 - expected).abs() < 4.5 * sigma,
            "{counts:?} vs {want:?}"
        );
        chi2 += (c as f64 - expected).powi(2) / expected;
    }
    // 99.9% quantiles of chi-square with 1..=5 degrees of freedom.
    let limit = [10.83, 13.82, 16.27, 18.47, 20.52][want.len() - 2];
    assert!(chi2 < limit, "chi2 = {chi2}, counts {counts:?} vs {want:?}");
}

#[test]
fn draws_follow_the_softmax_distribution() {
    let p = [0.1, 0.2, 0.3, 0.4];
    check_frequencies(plain(2024), &logits_of(&p), &p, 20_000);

    // Temperature 2 flattens to p^(1/2), renormalised.
    let sq: Vec<f64> = p.iter().map(|x: &f64| x.sqrt()).collect();
    let z: f64 = sq.iter().sum();
    let want: Vec<f64> = sq.iter().map(|x| x / z).collect();
    check_frequencies(
        SamplerConfig {
            temperature: 2.0,
            ..plain(9)
        },
        &logits_of(&p),
        &want,
        20_000,
    );

    // Temperature 0.5 sharpens to p^2.
    let sq: Vec<f64> = p.iter().map(|x: &f64| x * x).collect();
    let z: f64 = sq.iter().sum();
    let want: Vec<f64> = sq.iter().map(|x| x / z).collect();
    check_frequencies(
        SamplerConfig {
            temperature: 0.5,
            ..plain(10)
        },
        &logits_of(&p),
        &want,
        20_000,
    );
}

#[test]
fn degenerate_logits_do_not_break_sampling() {
    let mut s = Sampler::new(plain(3));
    // NaN is impossible, +inf dominates.
    assert_eq!(s.sample(&mut [f32::NAN, 0.0, f32::INFINITY, 1.0], &[]), 2);
    // Only one possible token.
    let mut l = [f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0];
    for _ in 0..100 {
        assert_eq!(s.sample(&mut l.clone(), &[]), 2);
    }
    l = [f32::NEG_INFINITY; 3];
    assert_eq!(s.sample(&mut l, &[]), 0);
    assert_eq!(s.sample(&mut [5.0], &[]), 0);
}

#[test]
fn settings_are_validated_with_clear_messages() {
    assert!(SamplerConfig::default().validate().is_ok());
    let e = SamplerConfig {
        top_p: 1.5,
        ..plain(0)
    }
    .validate()
    .unwrap_err();
    assert_eq!(e.name, "top_p");
    assert!(
        e.to_string().contains("top_p") && e.to_string().contains("1.5"),
        "{e}"
    );
    assert!(SamplerConfig {
        min_p: -0.1,
        ..plain(0)
    }
    .validate()
    .is_err());
    assert!(SamplerConfig {
        repeat_penalty: 0.0,
        ..plain(0)
    }
    .validate()
    .is_err());
    assert!(SamplerConfig {
        temperature: f32::NAN,
        ..plain(0)
    }
    .validate()
    .is_err());
}
