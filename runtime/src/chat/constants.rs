//! What minijinja's compiler would build from a template's constants, bounded before it
//! runs.
//!
//! The compiler folds every operation whose operands are all constants (`'a' * 99999999`,
//! `'x' ~ 'y'`, `10 ** 8`) into one value while it compiles, before any budget or fuel
//! exists: thirty 100 MB repetitions joined by `~` in a 500-byte template made it allocate
//! gigabytes and abort the process. Its only amplifier is `*` (and `+`, `~` adding such
//! results up), so this walks the parsed template and, for every operation the compiler
//! would fold, computes the size of what it would build without building it.

use minijinja::machinery::ast::{self, BinOpKind, CallArg, Expr, Stmt, UnaryOpKind};
use minijinja::value::ValueKind;
use minijinja::{Error, ErrorKind};

/// The longest string a template's constants may fold into. Real templates fold a few
/// literals at most.
pub(super) const MAX_FOLDED: usize = 1 << 20;

/// Fails if compiling `tree` would fold constants into a string longer than
/// [`MAX_FOLDED`], or repeat a constant list (which folds into a lazy sequence that can take
/// 10⁹ steps to walk, each building nothing).
pub(super) fn check(tree: &Stmt<'_>) -> Result<(), Error> {
    stmt(tree)
}

/// A constant the compiler would fold, as far as its size goes.
#[derive(Clone, Copy)]
enum Folded {
    Int(i128),
    /// A string of this many bytes.
    Str(usize),
    /// A list (or lists joined by `+`).
    Seq,
    /// Anything else (a map, a float, a comparison, none): its size is that of the template
    /// text it was written in.
    Small,
}

fn refuse(what: &str) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("the template's constants {what}: refused before compiling"),
    )
}

fn stmts(body: &[Stmt<'_>]) -> Result<(), Error> {
    body.iter().try_for_each(stmt)
}

fn stmt(s: &Stmt<'_>) -> Result<(), Error> {
    match s {
        Stmt::Template(t) => stmts(&t.children),
        Stmt::EmitExpr(e) => expr(&e.expr),
        Stmt::EmitRaw(_) => Ok(()),
        Stmt::ForLoop(f) => {
            expr(&f.target)?;
            expr(&f.iter)?;
            f.filter_expr.as_ref().map_or(Ok(()), expr)?;
            stmts(&f.body)?;
            stmts(&f.else_body)
        }
        Stmt::IfCond(i) => {
            expr(&i.expr)?;
            stmts(&i.true_body)?;
            stmts(&i.false_body)
        }
        Stmt::WithBlock(w) => {
            for (a, b) in &w.assignments {
                expr(a)?;
                expr(b)?;
            }
            stmts(&w.body)
        }
        Stmt::Set(s) => {
            expr(&s.target)?;
            expr(&s.expr)
        }
        Stmt::SetBlock(s) => {
            expr(&s.target)?;
            s.filter.as_ref().map_or(Ok(()), expr)?;
            stmts(&s.body)
        }
        Stmt::AutoEscape(a) => {
            expr(&a.enabled)?;
            stmts(&a.body)
        }
        Stmt::FilterBlock(f) => {
            expr(&f.filter)?;
            stmts(&f.body)
        }
        Stmt::Block(b) => stmts(&b.body),
        Stmt::Import(i) => {
            expr(&i.expr)?;
            expr(&i.name)
        }
        Stmt::FromImport(i) => {
            expr(&i.expr)?;
            for (a, b) in &i.names {
                expr(a)?;
                b.as_ref().map_or(Ok(()), expr)?;
            }
            Ok(())
        }
        Stmt::Extends(e) => expr(&e.name),
        Stmt::Include(i) => expr(&i.name),
        Stmt::Macro(m) => macro_decl(m),
        Stmt::CallBlock(c) => {
            call(&c.call)?;
            macro_decl(&c.macro_decl)
        }
        Stmt::Do(d) => call(&d.call),
    }
}

fn macro_decl(m: &ast::Macro<'_>) -> Result<(), Error> {
    m.args.iter().chain(&m.defaults).try_for_each(expr)?;
    stmts(&m.body)
}

fn call(c: &ast::Call<'_>) -> Result<(), Error> {
    expr(&c.expr)?;
    args(&c.args)
}

fn args(a: &[CallArg<'_>]) -> Result<(), Error> {
    a.iter().try_for_each(|a| match a {
        CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => {
            expr(e)
        }
    })
}

/// Checks every operation in `e` (folded or not: a constant part of a larger expression is
/// folded on its own).
fn expr(e: &Expr<'_>) -> Result<(), Error> {
    fold(e).map(drop)
}

/// Checks every operation in `e` and returns what the compiler would fold `e` into (`None`:
/// not a constant). One walk: each node's value comes from its children's.
fn fold(e: &Expr<'_>) -> Result<Option<Folded>, Error> {
    Ok(match e {
        Expr::Var(_) => None,
        Expr::Const(c) => Some(match c.value.kind() {
            ValueKind::String => Folded::Str(c.value.as_str().map_or(0, str::len)),
            // minijinja counts with whole floats and bools too (`'a' * 1e8`, `'a' * true`);
            // a number no i64 holds counts as the largest.
            ValueKind::Number | ValueKind::Bool => {
                Folded::Int(c.value.as_i64().map_or(i128::MAX, i128::from))
            }
            _ => Folded::Small,
        }),
        Expr::List(l) => all_folded(&l.items)?.then_some(Folded::Seq),
        Expr::Map(m) => all_folded(m.keys.iter().chain(&m.values))?.then_some(Folded::Small),
        Expr::UnaryOp(u) => match (&u.op, fold(&u.expr)?) {
            (_, None) => None,
            (UnaryOpKind::Neg, Some(Folded::Int(n))) => Some(Folded::Int(n.saturating_neg())),
            _ => Some(Folded::Small),
        },
        Expr::BinOp(b) => match (fold(&b.left)?, fold(&b.right)?) {
            (Some(l), Some(r)) => Some(binop(b.op, l, r)?),
            _ => None,
        },
        Expr::Compare(c) => {
            all_folded(std::iter::once(&c.expr).chain(c.ops.iter().map(|op| &op.expr)))?
                .then_some(Folded::Small)
        }
        // Not folded; their parts may be.
        Expr::Slice(s) => {
            expr(&s.expr)?;
            [&s.start, &s.stop, &s.step]
                .into_iter()
                .flatten()
                .try_for_each(expr)?;
            None
        }
        Expr::IfExpr(i) => {
            expr(&i.test_expr)?;
            expr(&i.true_expr)?;
            i.false_expr.as_ref().map_or(Ok(()), expr)?;
            None
        }
        Expr::Filter(f) => {
            f.expr.as_ref().map_or(Ok(()), expr)?;
            args(&f.args)?;
            None
        }
        Expr::Test(t) => {
            expr(&t.expr)?;
            args(&t.args)?;
            None
        }
        Expr::GetAttr(g) => {
            expr(&g.expr)?;
            None
        }
        Expr::GetItem(g) => {
            expr(&g.expr)?;
            expr(&g.subscript_expr)?;
            None
        }
        Expr::Call(c) => {
            call(c)?;
            None
        }
    })
}

/// Checks each of `items` (all of them) and says whether every one is a constant.
fn all_folded<'e, 's: 'e>(items: impl IntoIterator<Item = &'e Expr<'s>>) -> Result<bool, Error> {
    let mut all = true;
    for e in items {
        all &= fold(e)?.is_some();
    }
    Ok(all)
}

/// What the compiler folds `l op r` into, or an error if that is too large to build.
fn binop(op: BinOpKind, l: Folded, r: Folded) -> Result<Folded, Error> {
    let folded = match (op, l, r) {
        (BinOpKind::Mul, Folded::Str(len), Folded::Int(n))
        | (BinOpKind::Mul, Folded::Int(n), Folded::Str(len)) => {
            Folded::Str(len.saturating_mul(usize::try_from(n.max(0)).unwrap_or(usize::MAX)))
        }
        (BinOpKind::Mul, Folded::Seq, _) | (BinOpKind::Mul, _, Folded::Seq) => {
            return Err(refuse("repeat a list"));
        }
        // A count this walk does not follow (a quotient, say): it could be any size.
        (BinOpKind::Mul, Folded::Str(_), Folded::Small)
        | (BinOpKind::Mul, Folded::Small, Folded::Str(_)) => {
            return Err(refuse("repeat a string by a computed count"));
        }
        (BinOpKind::Add, Folded::Seq, Folded::Seq) => Folded::Seq,
        (BinOpKind::Add | BinOpKind::Concat, Folded::Str(a), Folded::Str(c)) => {
            Folded::Str(a.saturating_add(c))
        }
        // `~` writes numbers and small constants out: at most their text's size.
        (BinOpKind::Concat, a, c) => Folded::Str(text_len(a).saturating_add(text_len(c))),
        (op, Folded::Int(a), Folded::Int(c)) => int_op(op, a, c),
        _ => Folded::Small,
    };
    match folded {
        Folded::Str(len) if len > MAX_FOLDED => Err(refuse(&format!(
            "fold into a string of {len} bytes (the limit is {MAX_FOLDED})"
        ))),
        f => Ok(f),
    }
}

/// Bytes of a folded constant written out by `~`.
fn text_len(f: Folded) -> usize {
    match f {
        Folded::Str(n) => n,
        // An i128 in decimal, or a small literal's own text (bounded by the template).
        Folded::Int(_) | Folded::Seq | Folded::Small => 40,
    }
}

/// Integer arithmetic as minijinja folds it, saturating (a multiplier that saturates makes
/// any string it repeats too large).
fn int_op(op: BinOpKind, a: i128, b: i128) -> Folded {
    match op {
        BinOpKind::Add => Folded::Int(a.saturating_add(b)),
        BinOpKind::Sub => Folded::Int(a.saturating_sub(b)),
        BinOpKind::Mul => Folded::Int(a.saturating_mul(b)),
        BinOpKind::Pow => Folded::Int(match u32::try_from(b) {
            Ok(e) => a.saturating_pow(e),
            Err(_) if b < 0 => 0,
            Err(_) => i128::MAX,
        }),
        BinOpKind::FloorDiv if b != 0 => Folded::Int(a.div_euclid(b)),
        BinOpKind::Rem if b != 0 => Folded::Int(a.rem_euclid(b)),
        // Division gives a float; comparisons a bool.
        _ => Folded::Small,
    }
}
