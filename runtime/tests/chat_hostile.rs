//! Defect 5 of the hostile-input audit: a chat template from a model file that builds a
//! huge value (doubling a string through `~`, `+`, `*`, `join`, `replace`, `format`, a list,
//! a macro's or a `{% set %}` block's output) is a clear error, and the rendering never
//! holds much memory: the test binary's allocator counts what this thread holds.

use tern::chat::{ChatError, ChatTemplate, Message};
use tern_testkit::heap;

/// Counts the heap each thread holds (see `tern_testkit::heap`).
#[global_allocator]
static HEAP: heap::PerThread = heap::PerThread;

fn jinja(source: &str) -> ChatTemplate {
    ChatTemplate::Jinja {
        source: source.into(),
        bos_token: String::new(),
        eos_token: String::new(),
    }
}

/// A template that sets `s` to `"ab"` and then `step` (a statement using `s`) `n` times.
fn doubling(step: &str, n: usize) -> String {
    format!("{{% set s = 'ab' %}}{}{{{{ s|length }}}}", step.repeat(n))
}

/// What a render of `source` over one short message may hold at its peak: the budget of
/// the rendering (16 MiB + 32 × its input) with room for the engine's own structures.
const PEAK_LIMIT: usize = 48 << 20;

/// Renders `source` and returns its error with the peak heap it reached.
fn render_hostile(source: &str) -> (Result<String, ChatError>, usize) {
    let before = heap::start();
    let result = jinja(source).render(&[Message::new("user", "hi")], true);
    (result, heap::peak() - before)
}

/// Each way of doubling a value, 27 times: `"ab"` becomes 256 MiB. Before the budget, each
/// of these rendered and held a quarter of a gigabyte or more (40 doublings aborted the
/// process on allocation at 5 GB and more).
#[test]
fn doubling_templates_stop_at_the_budget() {
    let steps = [
        ("~", "{% set s = s ~ s %}"),
        ("+", "{% set s = s + s %}"),
        ("* 2", "{% set s = s * 2 %}"),
        ("join", "{% set s = [s, s]|join %}"),
        ("join method", "{% set s = ''.join([s, s]) %}"),
        (
            "replace",
            "{% set s = s|replace('a', 'aa')|replace('b', 'bb') %}",
        ),
        (
            "replace method",
            "{% set s = s.replace('a', 'aa').replace('b', 'bb') %}",
        ),
        ("format", "{% set s = '%s%s'|format(s, s) %}"),
        ("list concatenation", "{% set s = (s|list + s|list)|join %}"),
        (
            "macro output",
            "{% macro d(x) %}{{ x }}{{ x }}{% endmacro %}{% set s = d(s) %}",
        ),
        ("set block", "{% set s %}{{ s }}{{ s }}{% endset %}"),
        ("format method", "{% set s = '{}{}'.format(s, s) %}"),
        ("tojson", "{% set s = [s, s]|tojson %}"),
        ("string of a list", "{% set s = [s, s]|string %}"),
    ];
    for (name, step) in steps {
        let (result, peak) = render_hostile(&doubling(step, 27));
        let e = result.expect_err(name);
        assert!(
            matches!(e, ChatError::TooLarge(_) | ChatError::OutputTooLarge(_)),
            "{name}: {e}"
        );
        assert!(peak < PEAK_LIMIT, "{name}: the rendering held {peak} bytes");
    }
}

/// One step that would build a huge value at once: each is refused before it allocates.
#[test]
fn single_huge_values_are_refused_before_they_are_built() {
    let big = [
        ("repeat", "{% set s = 'ab' %}{{ (s * 90000000)|length }}"),
        (
            "lazy list joined",
            "{% set l = ['abcdefgh'] %}{{ (l * 100000000)|join|length }}",
        ),
        (
            "lazy list emitted",
            "{% set l = ['abcdefgh'] %}{{ l * 100000000 }}",
        ),
        ("indent", "{{ ('a\\n' * 1000)|indent(1000000)|length }}"),
        ("format width", "{{ '{:>1000000000}'.format('a')|length }}"),
        ("batch fill", "{{ [1]|batch(1000000000, 'x')|list|length }}"),
    ];
    for (name, source) in big {
        let (result, peak) = render_hostile(source);
        let e = result.expect_err(name);
        assert!(matches!(e, ChatError::TooLarge(_)), "{name}: {e}");
        assert!(peak < PEAK_LIMIT, "{name}: the rendering held {peak} bytes");
    }
}

/// Found by the `chat_template` fuzz target (2026-12-01): a list repeated many times is
/// lazy, and when it is empty each of its repetitions is a step that builds nothing, so
/// nothing was charged and emitting `[''] * 0 * 777777777` ran for minutes. A repetition
/// now costs at least an item each, charged when the `*` runs; a constant list is not
/// repeated at all (see `constant_folds_are_bounded_before_compiling`). Each case must end within seconds: a render
/// that still runs after 20 fails the test.
#[test]
fn repeated_empty_lists_are_refused_before_they_run() {
    let cases = [
        ("the fuzzer's input", "%{{[''] *00*00777777777}}n}"),
        ("constant, emitted", "{{ [] * 1000000000 }}"),
        ("constant, joined", "{{ ([] * 1000000000 + [1])|join }}"),
        ("emitted", "{% set e = [] %}{{ e * 1000000000 }}"),
        (
            "looped over",
            "{% set e = [] %}{% for x in e * 1000000000 %}{% endfor %}",
        ),
        (
            "count first",
            "{% set e = [] %}{{ (1000000000 * e)|list|length }}",
        ),
        (
            "nested",
            "{% set e = [[]] %}{{ (e * 100000000)|join|length }}",
        ),
    ];
    for (name, source) in cases {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(jinja(source).render(&[Message::new("user", "hi")], true));
        });
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{name}: still rendering after 20 s"));
        let e = result.expect_err(name);
        let constant = name.starts_with("constant") || name.starts_with("the fuzzer");
        match e {
            ChatError::Template(ref m) if constant => {
                assert!(m.contains("constants repeat a list"), "{name}: {e}")
            }
            ChatError::TooLarge(_) if !constant => {}
            e => panic!("{name}: {e}"),
        }
    }
}

/// minijinja's compiler folds operations on constants into one value while it compiles,
/// before any budget exists: thirty 100 MB repetitions joined by `~` (a 500-byte
/// template) aborted the process on a 2.1 GB allocation. What a fold would build is now
/// measured on the parsed template, and a template that would fold more than a megabyte
/// is refused before it compiles.
#[test]
fn constant_folds_are_bounded_before_compiling() {
    let thirty = vec!["('a' * 99999999)"; 30].join(" ~ ");
    let cases = [
        (
            "thirty repetitions joined",
            format!("{{{{ ({thirty})|length }}}}"),
        ),
        (
            "one repetition",
            "{{ ('ab' * 90000000)|length }}".to_string(),
        ),
        ("a power as the count", "{{ 'x' * 10 ** 7 }}".to_string()),
        ("a float as the count", "{{ 'x' * 1e8 }}".to_string()),
        (
            "a quotient as the count",
            "{{ 'x' * (1e8 / 1) }}".to_string(),
        ),
        ("repeated twice", "{{ ('a' * 1000) * 1000000 }}".to_string()),
        (
            "added",
            "{% set s = ('a' * 900000) + ('b' * 900000) %}".to_string(),
        ),
        (
            "a list",
            "{{ (([1] + [2]) * 1000000000000000000) ~ 'x' }}".to_string(),
        ),
        (
            "in a macro default",
            "{% macro m(x=('a' * 99999999)) %}{% endmacro %}".to_string(),
        ),
    ];
    for (name, source) in cases {
        let (result, peak) = render_hostile(&source);
        match result {
            Err(ChatError::Template(m)) if m.contains("the template's constants") => {}
            other => panic!("{name}: {other:?}"),
        }
        assert!(peak < PEAK_LIMIT, "{name}: the rendering held {peak} bytes");
    }
    // Real templates fold a few literals, and constant lists may still be joined.
    let t = jinja("{{ 'a' ~ 'b' ~ 1 }} {{ '=' * 8 }} {{ ([1] + [2, 3])|join(',') }} {{ -2 ** 3 }}");
    assert_eq!(t.render(&[], false).unwrap(), "ab1 ======== 1,2,3 -8");
}

/// Literal text emitted in a loop into a macro's captured output: the fuel is lowered for
/// long literals, so their emissions stay within the budget for literal text.
#[test]
fn long_literals_in_loops_run_out_of_fuel() {
    let literal = "x".repeat(64 << 10);
    let source = format!(
        "{{% macro m() %}}{{% for i in range(100000) %}}{{% for j in range(100) %}}{literal}{{% endfor %}}{{% endfor %}}{{% endmacro %}}{{{{ m()|length }}}}"
    );
    let (result, peak) = render_hostile(&source);
    let e = result.unwrap_err();
    assert!(matches!(e, ChatError::OutOfFuel(_)), "{e}");
    assert!(peak < 2 * PEAK_LIMIT, "the rendering held {peak} bytes");
}

/// The checked operators keep their meaning for values they do not build from.
#[test]
fn checked_operators_keep_their_meaning() {
    let t = jinja(
        "{% set one = [1] %}{% set zero = [0] %}\
         {{ 1 + 2 }} {{ 2 * 3 }} {{ 1.5 + 1 }} {{ (one + [2, 3])|join(',') }} {{ zero * 2 }} \
         {{ 'ab' * 2 }} {{ 2 * 'cd' }} {{ 'a' ~ 1 ~ none }} {{ 'x' + 'y' }} {{ '%s-%d'|format('a', 3) }} \
         {{ 'a b'.split()|tojson }} {{ 'Hi'.upper() }}",
    );
    assert_eq!(
        t.render(&[], false).unwrap(),
        "3 6 2.5 1,2,3 [0, 0] abab cdcd a1None xy a-3 [\"a\", \"b\"] HI"
    );
    // `1 + 'a'` stays an error, as minijinja has it.
    assert!(jinja("{{ 1 + 'a' }}").render(&[], false).is_err());
    // A template may not call the checked operators by their names.
    assert!(jinja("{{ __tern_concat('a', 'b') }}")
        .render(&[], false)
        .is_err());
}

/// A long conversation through a template that copies each message several times still
/// renders: the budget scales with the messages.
#[test]
fn long_conversations_render_within_the_budget() {
    let template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']|trim + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    let long = "word ".repeat(400_000);
    let mut msgs = vec![Message::new("system", &long)];
    for i in 0..2000 {
        msgs.push(Message::new("user", &format!("question {i}")));
        msgs.push(Message::new("assistant", &format!("answer {i}")));
    }
    let text = jinja(template).render(&msgs, true).unwrap();
    assert!(text.starts_with("<|im_start|>system\nword word"));
    assert!(text.ends_with("answer 1999<|im_end|>\n<|im_start|>assistant\n"));
}
