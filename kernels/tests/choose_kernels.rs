//! The process's kernel set: the first choice holds, `TERN_KERNELS` wins, an unknown set is
//! an error. One test: the choice is process-wide state.

use tern_kernels::{choose_kernels, kernels, KernelSet};

#[test]
fn the_first_choice_holds_for_the_process() {
    let available: Vec<&str> = KernelSet::available().iter().map(|s| s.name()).collect();
    let Err(err) = choose_kernels("no-such-set") else {
        panic!("an unknown kernel set was accepted");
    };
    assert!(err.to_string().contains("scalar"), "{err}");

    let best = *available.last().unwrap();
    let env = std::env::var("TERN_KERNELS").ok();
    if let Some(env) = env.filter(|e| available.contains(&e.trim())) {
        // The environment's set wins over any choice.
        assert_eq!(choose_kernels("scalar").unwrap().name(), env.trim());
        assert_eq!(choose_kernels(best).unwrap().name(), env.trim());
        return;
    }
    assert_eq!(choose_kernels("scalar").unwrap().name(), "scalar");
    assert_eq!(kernels().name(), "scalar");
    // A later, different choice (a second model with another board) keeps the first.
    assert_eq!(choose_kernels(best).unwrap().name(), "scalar");
    assert_eq!(kernels().name(), "scalar");
}
