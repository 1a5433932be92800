"""``python -m tern chat``: the same chat as the ``tern chat`` command, over the same runtime.

It takes the CLI's options with the CLI's defaults, streams replies, keeps the commands
``/save FILE``, ``/load FILE``, ``/reset``, ``/stats``, ``/quit``, and Ctrl-C stops the
current reply and keeps the chat. When stdin is not a terminal it reads one message per
line and prints each reply followed by an empty line, as ``tern chat`` does.
"""

import argparse
import sys

import tern


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tern", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("chat", help="chat with a model in the terminal (or one message per line on stdin)")
    c.add_argument("-m", "--model", default=tern.DEFAULT_MODEL, help="a GGUF file or a known model name")
    c.add_argument("-t", "--threads", type=int, default=None, help="threads (default: the board's)")
    c.add_argument("--board", default="auto", help="board profile, or auto")
    c.add_argument("--system", default=None, help="a system prompt, kept in the cache")
    c.add_argument("--no-pin", action="store_true", help="let the system prompt slide out of the window")
    c.add_argument("--sinks", type=int, default=None, help="attention-sink tokens (default: the board's)")
    c.add_argument("--window", type=int, default=None, help="rolling window tokens (default: the board's)")
    c.add_argument("--kv-type", default=None, choices=["f32", "f16", "q8_0"], help="KV element type")
    c.add_argument("-n", "--max-reply", type=int, default=256, help="longest reply, in tokens")
    c.add_argument("--temp", type=float, default=0.6, help="temperature; 0 is greedy")
    c.add_argument("--seed", type=int, default=42, help="sampler seed")
    c.add_argument("--repeat-penalty", type=float, default=1.1, help="penalty for repeats (1: none)")
    return p


def _stats_line(s: "tern.Stats") -> str:
    return (
        f"tokens so far: {s.tokens} | cache: {s.cache_used}/{s.cache_capacity} | "
        f"prompt: {s.prompt_tokens} tokens, {s.prompt_tokens_per_second:.1f} tokens/s | "
        f"generated: {s.generated_tokens} tokens, {s.generation_tokens_per_second:.1f} tokens/s"
    )


def chat(argv=None) -> int:
    a = _parser().parse_args(argv)
    model = tern.Model(a.model, threads=a.threads, board=a.board)
    if not model.info.has_chat_template:
        print(
            'note: this model has no chat template; using the plain format '
            '("User: …" / "Assistant: …" lines)',
            file=sys.stderr,
        )

    def new_session() -> "tern.Session":
        return model.session(
            a.system,
            sinks=a.sinks,
            window=a.window,
            kv_type=a.kv_type,
            temperature=a.temp,
            repeat_penalty=a.repeat_penalty,
            seed=a.seed,
            max_tokens=a.max_reply,
            pin_system=not a.no_pin,
        )

    session = new_session()
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        print("Tern chat. /save FILE, /load FILE, /reset, /stats, /quit; Ctrl-C stops a reply.", file=sys.stderr)

    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            return 0
        except KeyboardInterrupt:
            print(file=sys.stderr)
            continue
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, arg = line.partition(" ")
            arg = arg.strip()
            try:
                if cmd in ("/quit", "/exit"):
                    return 0
                elif cmd == "/save" and arg:
                    session.save(arg)
                    print(f"saved to {arg}", file=sys.stderr)
                elif cmd == "/load" and arg:
                    session = tern.Session.restore(model, arg)
                    print(f"loaded {arg}", file=sys.stderr)
                elif cmd == "/reset":
                    session = new_session()
                    print("the conversation starts afresh", file=sys.stderr)
                elif cmd == "/stats":
                    print(_stats_line(session.stats), file=sys.stderr)
                else:
                    print("commands: /save FILE, /load FILE, /reset, /stats, /quit", file=sys.stderr)
            except tern.TernError as e:
                if not interactive:
                    raise
                print(f"error: {e}", file=sys.stderr)
            continue
        try:
            for piece in session.stream(line):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass  # the reply stops; the chat goes on
        sys.stdout.write("\n")
        if not interactive:
            sys.stdout.write("\n")
        sys.stdout.flush()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "chat":
        _parser().parse_args(argv)  # prints usage and exits
        return 2
    try:
        return chat(argv)
    except tern.TernError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
