"""The ``kexec-auto`` command: argument parsing and output only."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from typing import IO, Optional, Sequence

from . import __version__
from .log import one_line

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_KEXEC = 0, 1, 2, 3
# Commands after which the metrics file is brought up to date.
STATE_CHANGING = {"update", "load", "boot", "bless", "forget", "set", "acknowledge"}

DESCRIPTION = """\
Make every reboot boot the newest installed kernel through kexec.

kexec-auto picks a kernel from /boot (by default the newest one of the
running kernel's flavour), writes it into /etc/default/kexec for kexec-tools,
and loads it when the machine reboots, so that a plain "reboot" skips the
firmware and the boot loader.  The kernel hooks run "update" on every kernel
install and removal; you rarely need to run anything by hand.
Settings: /etc/default/kexec-auto (or "dpkg-reconfigure kexec-auto")."""

EPILOG = """\
exit status: 0 success, 1 error, 2 usage error,
             3 (status) the next reboot will not boot the selected kernel.
examples:
  kexec-auto status          what the next reboot will boot, and why
  kexec-auto list            every kernel found and whether it can be chosen
  kexec-auto update --dry-run
See kexec-auto(8) for the settings and how reboots work."""


def root_dir(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("an empty root directory")
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    return text


class Parser(argparse.ArgumentParser):
    """argparse's parser, except that help, usage and errors with nowhere
    to go raise OSError, on every Python: 3.12 and later would drop them
    without a word and exit 0."""

    def _print_message(self, message: str, file: Optional[IO[str]] = None) -> None:
        if message:
            (file or sys.stderr).write(message)


def _root_option(default: object) -> Parser:
    common = Parser(add_help=False)
    common.add_argument(
        "--root", metavar="DIR", default=default, type=root_dir,
        help="act on the system installed in DIR, as if DIR were / (default: /); "
        "nothing in DIR is run, and links in it are followed only inside it",
    )
    return common


def build_parser() -> Parser:
    # --root may come before or after the command: the command's parser
    # sets it only when given there, never overwriting the value given before.
    common = _root_option(argparse.SUPPRESS)
    parser = Parser(
        prog="kexec-auto", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=[_root_option("/")],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", parents=[common], help="list the kernels found, in order, and which one is selected")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p = sub.add_parser("status", parents=[common],
                       help="show what the next reboot will boot (exit 3 if not the selected kernel)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p = sub.add_parser("update", parents=[common], help="regenerate /etc/default/kexec for the selected kernel")
    p.add_argument("--dry-run", action="store_true", help="print the change as a unified diff and change nothing")
    p.add_argument("--quiet", action="store_true", help="say nothing when the file is unchanged")
    p = sub.add_parser("load", parents=[common], help="load the kernel /etc/default/kexec names into memory now")
    p.add_argument(
        "--at-shutdown", action="store_true",
        help="as run by kexec-auto-load.service while the system shuts down: load only when "
        "rebooting, not after coldreboot, and mark the kernel for the reboot hook",
    )
    sub.add_parser("arm", parents=[common], help="publish the selected kernel for 'systemctl kexec'")
    sub.add_parser(
        "boot", parents=[common],
        help="run early in every boot: judge the kernel being tried, arm, and hand off when HANDOFF=true",
    )
    sub.add_parser("bless", parents=[common], help="mark the running kernel good (run once the system is healthy)")
    p = sub.add_parser(
        "fail-trial", parents=[common],
        help="give up the trial boot of the running kernel: record why and reset the machine "
        "(run by kexec-auto-fail-trial@.service)",
    )
    p.add_argument("kind", choices=("emergency", "rescue", "deadline"))
    p = sub.add_parser("forget", parents=[common], help="clear a kernel's good or bad mark so it can be selected again")
    p.add_argument("release", metavar="RELEASE")
    sub.add_parser("acknowledge", parents=[common],
                   help="stop reporting what a damaged boot state lost, once seen")
    p = sub.add_parser("set", parents=[common], help="change settings in /etc/default/kexec-auto (KEY=VALUE ...)")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    p = sub.add_parser("get", parents=[common], help="print settings from /etc/default/kexec-auto, one per line")
    p.add_argument("keys", nargs="+", metavar="KEY")
    sub.add_parser("debconf-answers", parents=[common],
                   help="print the debconf answers that /etc/default/kexec-auto stands for (debian/config)")
    sub.add_parser("debconf-note", parents=[common],
                   help="print why this machine cannot reboot through kexec, nothing if it can (debian/postinst)")
    p = sub.add_parser("debconf-apply", parents=[common],
                       help="write debconf answers into /etc/default/kexec-auto (debian/postinst)")
    p.add_argument("answers", nargs="*", metavar="QUESTION=VALUE")
    return parser


UNKNOWN_RUNNING = "unknown here (a chroot or container: the host's kernel runs; the first boot tells)"


def _print_list(data: dict) -> None:
    print(f"running kernel: {data['running'] or UNKNOWN_RUNNING}")
    for notice in data["boot_state_damage"]:
        print(f"boot state DAMAGED at {notice}: a kernel whose mark was lost shows as untried")
    for kernel in data["kernels"]:
        mark = "*" if kernel["selected"] else " "
        state = "selectable" if kernel["selectable"] else f"not selectable: {kernel['why_not']}"
        boot = kernel["boot"]
        if boot == "failed":
            boot = f"failed {kernel['failed_trials']}, {kernel['tries_left']} left"
        state = f"[{boot}] {state}"
        flavour = kernel["flavour"] or "-"
        package = f"{kernel['package']} {kernel['package_version']}" if kernel["package"] else "(no package)"
        print(f"{mark} {kernel['release']:<34} {flavour:<12} {state}\n      {kernel['image']}  {package}")
    if data["selected"]:
        print(f"selected: {data['selected']} ({data['reason']})")
    else:
        print("selected: none")


def _print_status(data: dict) -> None:
    print(f"running kernel:   {data['running'] or UNKNOWN_RUNNING}")
    print(f"enabled:          {'yes' if data['enabled'] else 'no'}")
    print(f"selected kernel:  {data['selected'] or 'none'} ({data['reason']})")
    print(f"command line:     {data['command_line'] or '(none)'}  [from {data['command_line_source']}]")
    values = data["default_kexec"]
    if values is None:
        print("/etc/default/kexec: missing")
    else:
        edited = "  (edited by hand)" if data["default_kexec_hand_edited"] else ""
        print(f"/etc/default/kexec: LOAD_KEXEC={values['LOAD_KEXEC']} KERNEL_IMAGE={values['KERNEL_IMAGE']}"
              f" INITRD={values['INITRD']}{edited}")
    loaded = {True: "yes", False: "no", None: "unknown"}[data["kexec_loaded"]]
    print(f"kernel loaded now: {loaded}")
    if data["lockdown"] not in (None, "none"):
        print(f"lockdown:         {data['lockdown']} (loading uses kexec_file_load; the kernel must be signed)")
    print(f"this boot:        {data['boot_method']}")
    print(f"next reboot:      {data['next_reboot']}")
    for blocker in data["blockers"]:
        print(f"  because: {blocker}")
    if data["trying"]:
        print(f"being tried:      {data['trying']} (marked good once the system is healthy)")
    if data["trial_boot"]:
        print(f"this boot:        a trial boot; its safety net resets the machine if the boot does not "
              f"complete within {data['trial_timeout']} s")
    print(f"tries:            a kernel is marked bad after {data['tries']} failed trial boot(s) in a row (TRIES)")
    for guard in data["trial_guards"]:
        word = "guarded" if guard["guarded"] else "NOT guarded"
        print(f"trial, {guard['failure'] + ':':<16} {word}: {guard['why']}")
    for release, info in data["failed_kernels"].items():
        print(f"failed trials:    {release}: {info['failed_trials']}, {info['tries_left']} tries left: {info['why']}")
    for notice in data["boot_state_damage"]:
        print(f"boot state:       DAMAGED at {notice} ('kexec-auto acknowledge' once seen)")
    for release, why in data["bad_kernels"].items():
        print(f"marked bad:       {release}: {why}")
    if data["boot_events"]:
        print("recent boot events:")
        for event in data["boot_events"]:
            print(f"  {event}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .log import standard_streams

    standard_streams()
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")  # odd bytes in names never crash output
    try:
        args = build_parser().parse_args(argv)
    except OSError as error:  # --help or a usage error with nowhere to print it
        print(f"kexec-auto: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run(args)
    except BrokenPipeError:  # e.g. "kexec-auto list | head -1"
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - one line, never a traceback
        from .log import stderr_log

        stderr_log(f"error: unexpected {error.__class__.__name__}: {one_line(error)}")
        return EXIT_ERROR


def _run(args: argparse.Namespace) -> int:
    from . import app, debconf, reboot, report, settings
    from .config import ConfigError
    from .log import stderr_log
    from .render import RenderError

    try:
        if args.command in ("list", "status"):
            data = report.kernel_list(args.root) if args.command == "list" else report.status_report(args.root)
            if args.json:
                json.dump(data, sys.stdout, indent=2)
                print()
            else:
                (_print_list if args.command == "list" else _print_status)(data)
                for message in data["warnings"]:
                    stderr_log(f"warning: {message}")
                for message in data["errors"]:
                    stderr_log(f"error: {message}")
            if args.command == "status" and not data["next_reboot_ok"]:
                return EXIT_NOT_KEXEC
            return EXIT_ERROR if data["errors"] else EXIT_OK
        if args.command == "update":
            if args.dry_run:
                return app.show_diff(args.root)
            return app.update(args.root, quiet=args.quiet)
        if args.command == "load":
            return (reboot.load_at_shutdown if args.at_shutdown else reboot.load_now)(args.root)
        if args.command == "arm":
            return app.arm(args.root)
        if args.command == "boot":
            return reboot.boot(args.root)
        if args.command == "bless":
            return reboot.bless(args.root)
        if args.command == "fail-trial":
            return reboot.fail_trial(args.root, args.kind)
        if args.command == "forget":
            reboot.forget(args.root, args.release)
            # The next reboot may try it again: say so in /etc/default/kexec now.
            return app.update(args.root, quiet=True)
        if args.command == "acknowledge":
            return reboot.acknowledge(args.root)
        if args.command == "set":
            settings.set_settings(args.root, args.assignments)
            return EXIT_OK
        if args.command == "debconf-answers":
            if settings.read_config_text(args.root) is None:
                return EXIT_OK  # no file: nothing to seed from
            config, _ = settings.load_config(args.root)
            print("".join(f"{question} {value}\n" for question, value in debconf.answers(config)), end="")
            return EXIT_OK
        if args.command == "debconf-note":
            from . import bootscan
            why = bootscan.machine_problem(args.root)
            print(why, end="\n" if why else "")
            return EXIT_OK
        if args.command == "debconf-apply":
            given = dict(answer.partition("=")[::2] for answer in args.answers)
            unknown = sorted(set(given) - set(debconf.QUESTIONS))
            if unknown:
                raise ConfigError(f"unknown debconf question {unknown[0]}")
            return app.apply_debconf(args.root, given)
        if args.command == "get":
            config, _ = settings.load_config(args.root)
            values = [settings.setting_text(config, key) for key in args.keys]
            print("\n".join(values))
            return EXIT_OK
    except BrokenPipeError:
        raise
    except (ConfigError, RenderError, OSError) as error:
        stderr_log(f"error: {one_line(error)}")
        return EXIT_ERROR
    finally:
        if args.command in STATE_CHANGING and not getattr(args, "dry_run", False):
            report.write_metrics(args.root)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
