//! A byte budget for rendering an untrusted chat template.
//!
//! minijinja's fuel bounds how many steps a template takes, not how large the values it
//! builds may grow: `{% set s = s ~ s %}` forty times is 160 steps and a 2 TB string, and the
//! process aborts on the allocation long before the fuel runs out. minijinja has no size
//! limit of its own (only `"x" * n` is capped, at 100 MB), so the template is compiled with
//! its unstable machinery and every instruction that can build a large value is routed
//! through code that checks its size first:
//!
//! - the `~`, `+` and `*` operators become calls of checked functions (one instruction for
//!   another, so no jump target moves); a list repeated by `*` is charged for every
//!   repetition, even of an empty list (walking them takes a step each);
//! - what the compiler would fold constant operations into is bounded before it compiles
//!   (`constants.rs`);
//! - the filters and Python methods that build strings or lists are wrapped: the size of
//!   their input times what their arguments can multiply it by must fit before they run,
//!   and what they built is charged after;
//! - every `{{ … }}` goes through a formatter that charges what it writes, which also bounds
//!   the output captured by macros and `{% set %}…{% endset %}` blocks;
//! - literal template text is bounded through the fuel: each emission costs one step, so
//!   the fuel is lowered until fuel × the longest literal fits [`RAW_BUDGET`].
//!
//! All charges draw on one budget per rendering, so the bytes a template can make are
//! bounded in total, not just per value.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use minijinja::machinery::{CompiledTemplate, Instruction, Instructions, TemplateConfig};
use minijinja::value::{Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

/// Bytes of literal template text one rendering may emit (through the fuel).
pub(super) const RAW_BUDGET: usize = 64 << 20;

/// Counted size of one string, list item or map entry beyond its bytes: what the engine's
/// `Value` and its containers cost, so that a million empty strings are not free.
const ITEM_COST: usize = 32;

/// Names of the checked operators; a template may not define them itself.
const CONCAT: &str = "__tern_concat";
const ADD: &str = "__tern_add";
const MUL: &str = "__tern_mul";
pub(super) const RESERVED_PREFIX: &str = "__tern_";

/// Builtin filters that build strings or lists whose size depends on their arguments.
/// The others (`length`, `first`, `default`, `int`, …) return a part of their input or a
/// number.
const WRAPPED_FILTERS: &[&str] = &[
    "batch",
    "capitalize",
    "chain",
    "dictsort",
    "e",
    "escape",
    "format",
    "groupby",
    "indent",
    "items",
    "join",
    "lines",
    "list",
    "lower",
    "map",
    "pprint",
    "replace",
    "reverse",
    "slice",
    "sort",
    "split",
    "string",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "zip",
];

/// The bytes one rendering may still build; shared by every checked operation.
pub(super) struct Budget {
    limit: usize,
    left: AtomicUsize,
    exceeded: AtomicBool,
}

impl Budget {
    pub(super) fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            left: AtomicUsize::new(limit),
            exceeded: AtomicBool::new(false),
        })
    }

    /// The limit this budget started from.
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// True once a rendering was stopped for building too much.
    pub(super) fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    fn left(&self) -> usize {
        self.left.load(Ordering::Relaxed)
    }

    fn refuse(&self) -> Error {
        self.exceeded.store(true, Ordering::Relaxed);
        Error::new(
            ErrorKind::InvalidOperation,
            format!("the template builds more than {} bytes", self.limit),
        )
    }

    /// Fails unless `bytes` more could still be built (nothing is taken).
    fn check(&self, bytes: usize) -> Result<(), Error> {
        if bytes > self.left() {
            return Err(self.refuse());
        }
        Ok(())
    }

    /// Takes `bytes` from the budget, or fails when they are not left.
    fn charge(&self, bytes: usize) -> Result<(), Error> {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .map(|_| ())
            .map_err(|_| self.refuse())
    }

    /// [`size`] of `v`, stopping once it exceeds what is left.
    fn size(&self, v: &Value) -> usize {
        size(v, self.left().saturating_add(1))
    }
}

/// What building `v` costs: the bytes of its strings plus [`ITEM_COST`] per string, number,
/// item and entry, walked through lists, maps and lazy sequences. The walk stops once the
/// sum passes `limit` (a lazy `[s] * 10**9` is not walked to its end).
fn size(v: &Value, limit: usize) -> usize {
    let mut total = 0usize;
    add_size(v, limit, 0, &mut total);
    total
}

fn add_size(v: &Value, limit: usize, depth: usize, total: &mut usize) {
    if *total > limit {
        return;
    }
    *total = total.saturating_add(ITEM_COST);
    if depth > 64 {
        return;
    }
    match v.kind() {
        ValueKind::String => *total = total.saturating_add(v.as_str().map_or(0, str::len)),
        ValueKind::Seq | ValueKind::Iterable => {
            if let Ok(items) = v.try_iter() {
                for item in items {
                    add_size(&item, limit, depth + 1, total);
                    if *total > limit {
                        return;
                    }
                }
            }
        }
        ValueKind::Map => {
            if let Ok(keys) = v.try_iter() {
                for key in keys {
                    add_size(&key, limit, depth + 1, total);
                    if let Ok(item) = v.get_item(&key) {
                        add_size(&item, limit, depth + 1, total);
                    }
                    if *total > limit {
                        return;
                    }
                }
            }
        }
        ValueKind::Plain | ValueKind::Invalid => {
            *total = total.saturating_add(display_len(v, limit.saturating_sub(*total)))
        }
        _ => {}
    }
}

/// The length of `v` as text, counted without building it, stopping past `limit`.
fn display_len(v: &Value, limit: usize) -> usize {
    struct Count(usize, usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 = self.0.saturating_add(s.len());
            if self.0 > self.1 {
                return Err(std::fmt::Error);
            }
            Ok(())
        }
    }
    let mut c = Count(0, limit);
    let _ = std::fmt::write(&mut c, format_args!("{v}"));
    c.0
}

/// How much a filter or method could multiply its input by: one plus, for each argument
/// after the input, its value if it is a count or width, else its size (a `replace`
/// target, a `join` separator).
fn amplification(budget: &Budget, args: &[Value]) -> usize {
    args.iter().fold(1usize, |acc, a| {
        let weight = match a.kind() {
            ValueKind::Number => a.as_i64().map_or(0, |n| n.max(0) as usize),
            ValueKind::Bool | ValueKind::None | ValueKind::Undefined => 0,
            _ => budget.size(a),
        };
        acc.saturating_add(weight)
    })
}

/// Fails unless building from `input` with `args` fits what is left; for `format`, the
/// widths written in the format string itself (`'{:>1000000}'`, `'%1000000s'`) count too.
fn check_inputs(budget: &Budget, name: &str, input: &Value, args: &[Value]) -> Result<(), Error> {
    let base = budget.size(input);
    let mut amp = amplification(budget, args);
    if name == "format" {
        amp = amp.saturating_add(numbers_in(input.as_str().unwrap_or_default()));
    }
    budget.check(base.saturating_mul(amp))
}

/// The sum of the decimal numbers written in `s`.
fn numbers_in(s: &str) -> usize {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|run| !run.is_empty())
        .map(|run| run.parse::<usize>().unwrap_or(usize::MAX))
        .fold(0, usize::saturating_add)
}

/// Python's operators for values the checked ones pass on (numbers, lists): evaluated by
/// minijinja itself in an environment of its own, where they build nothing large.
fn plain_op(expr: &'static str, a: Value, b: Value) -> Result<Value, Error> {
    static OPS: OnceLock<Environment<'static>> = OnceLock::new();
    let env = OPS.get_or_init(Environment::new);
    env.compile_expression(expr)?
        .eval(minijinja::context! { a => a, b => b })
}

/// The environment's hooks that keep a rendering within `budget`: the checked operators,
/// the wrapped filters and methods, and the counting formatter.
pub(super) fn install(env: &mut Environment<'_>, budget: &Arc<Budget>) {
    let b = budget.clone();
    env.add_function(CONCAT, move |x: Value, y: Value| -> Result<Value, Error> {
        b.charge(b.size(&x).saturating_add(b.size(&y)))?;
        Ok(Value::from(format!("{x}{y}")))
    });
    let b = budget.clone();
    env.add_function(ADD, move |x: Value, y: Value| -> Result<Value, Error> {
        if let (Some(s), Some(t)) = (x.as_str(), y.as_str()) {
            b.charge(s.len().saturating_add(t.len()).saturating_add(ITEM_COST))?;
            return Ok(Value::from([s, t].concat()));
        }
        plain_op("a + b", x, y)
    });
    let b = budget.clone();
    env.add_function(MUL, move |x: Value, y: Value| -> Result<Value, Error> {
        let repeat = match (x.as_str(), y.as_str()) {
            (Some(s), _) => Some((s.len(), &y)),
            (_, Some(s)) => Some((s.len(), &x)),
            _ => None,
        };
        let count = |n: &Value| n.as_i64().map_or(0, |n| n.max(0) as usize);
        if let Some((len, n)) = repeat {
            b.charge(len.saturating_mul(count(n)).saturating_add(ITEM_COST))?;
        } else if let Some((seq, n)) = [(&x, &y), (&y, &x)]
            .into_iter()
            .find(|(s, _)| matches!(s.kind(), ValueKind::Seq | ValueKind::Iterable))
        {
            // minijinja repeats a list lazily, so this builds nothing yet; but walking the
            // repetitions takes a step each, even those of an empty list, and no fuel is
            // spent inside one walk. Each repetition is charged at least an item.
            let each = b.size(seq).max(ITEM_COST);
            b.charge(each.saturating_mul(count(n)))?;
        }
        plain_op("a * b", x, y)
    });

    for &name in WRAPPED_FILTERS {
        let original = builtin_filter(name);
        let b = budget.clone();
        env.add_filter(
            name,
            move |state: &State, input: Value, args: Rest<Value>| -> Result<Value, Error> {
                check_inputs(&b, name, &input, &args)?;
                let mut all = Vec::with_capacity(args.len() + 1);
                all.push(input);
                all.extend(args.iter().cloned());
                let built = original.call(state, &all)?;
                b.charge(b.size(&built))?;
                Ok(built)
            },
        );
    }

    let b = budget.clone();
    env.set_unknown_method_callback(move |state, value, method, args| {
        check_inputs(&b, method, value, args)?;
        let built =
            minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)?;
        b.charge(b.size(&built))?;
        Ok(built)
    });

    let b = budget.clone();
    env.set_formatter(move |out, state, value| {
        b.charge(b.size(value))?;
        minijinja::escape_formatter(out, state, value)
    });
}

/// The builtin filter `name`, to call from its wrapper (the wrapper takes its name).
fn builtin_filter(name: &str) -> Value {
    use minijinja::filters as f;
    match name {
        "batch" => Value::from_function(f::batch),
        "capitalize" => Value::from_function(f::capitalize),
        "chain" => Value::from_function(f::chain),
        "dictsort" => Value::from_function(f::dictsort),
        "e" | "escape" => Value::from_function(f::escape),
        "format" => Value::from_function(f::format),
        "groupby" => Value::from_function(f::groupby),
        "indent" => Value::from_function(f::indent),
        "items" => Value::from_function(f::items),
        "join" => Value::from_function(f::join),
        "lines" => Value::from_function(f::lines),
        "list" => Value::from_function(f::list),
        "lower" => Value::from_function(f::lower),
        "map" => Value::from_function(f::map),
        "pprint" => Value::from_function(f::pprint),
        "replace" => Value::from_function(f::replace),
        "reverse" => Value::from_function(f::reverse),
        "slice" => Value::from_function(f::slice),
        "sort" => Value::from_function(f::sort),
        "split" => Value::from_function(f::split),
        "string" => Value::from_function(f::string),
        "title" => Value::from_function(f::title),
        "tojson" => Value::from_function(super::tojson),
        "trim" => Value::from_function(f::trim),
        "unique" => Value::from_function(f::unique),
        "upper" => Value::from_function(f::upper),
        "zip" => Value::from_function(f::zip),
        _ => unreachable!("{name} is not in WRAPPED_FILTERS"),
    }
}

/// `source` compiled as Hugging Face renders chat templates, with the operators that build
/// values routed through the checked functions of [`install`].
pub(super) fn compile(source: &str) -> Result<CompiledTemplate<'_>, Error> {
    let config = TemplateConfig {
        syntax_config: Default::default(),
        ws_config: minijinja::machinery::WhitespaceConfig {
            keep_trailing_newline: false,
            lstrip_blocks: true,
            trim_blocks: true,
        },
        default_auto_escape: Arc::new(|_| minijinja::AutoEscape::None),
    };
    // The compiler folds constant operations as it goes: what they would build is bounded
    // first, on the parsed template.
    let tree = minijinja::machinery::parse(
        source,
        "chat_template",
        Default::default(),
        config.ws_config,
    )?;
    super::constants::check(&tree)?;
    let mut compiled = CompiledTemplate::new("chat_template", source, &config)?;
    route_operators(&mut compiled.instructions);
    for block in compiled.blocks.values_mut() {
        route_operators(block);
    }
    Ok(compiled)
}

/// Replaces each value-building operator by a call of its checked function: both take the
/// top two values of the stack and leave one.
fn route_operators(instructions: &mut Instructions<'_>) {
    for i in 0..instructions.len() as u32 {
        if let Some(instr) = instructions.get_mut(i) {
            let checked = match instr {
                Instruction::StringConcat => CONCAT,
                Instruction::Add => ADD,
                Instruction::Mul => MUL,
                _ => continue,
            };
            *instr = Instruction::CallFunction(checked, Some(2));
        }
    }
}

/// The longest literal text the template emits in one step.
pub(super) fn longest_literal(compiled: &CompiledTemplate<'_>) -> usize {
    std::iter::once(&compiled.instructions)
        .chain(compiled.blocks.values())
        .flat_map(|ins| (0..ins.len() as u32).filter_map(move |i| ins.get(i)))
        .map(|instr| match instr {
            Instruction::EmitRaw(s) => s.len(),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}
