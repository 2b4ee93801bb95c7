"""``napari-xrd corrections list|verify|export``: inspect and share a corrections store."""

from __future__ import annotations

import json
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("corrections", help="list, verify or export a corrections store")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    ls = verbs.add_parser("list", help="one line per stored correction")
    ls.add_argument("store", help="corrections store directory")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_list)
    ve = verbs.add_parser("verify", help="read every correction in full; say which survive")
    ve.add_argument("store")
    ve.add_argument("--json", action="store_true")
    ve.set_defaults(func=_verify)
    ex = verbs.add_parser("export", help="copy readable corrections into a new dataset directory")
    ex.add_argument("store")
    ex.add_argument("destination", help="new, empty directory")
    ex.add_argument("--all-versions", action="store_true", help="keep superseded corrections too")
    ex.set_defaults(func=_export)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _store(path):
    from napari_xrd.core.corrections import CorrectionStore
    from napari_xrd.core.dataset import DatasetError

    store = CorrectionStore(path)
    if not store.exists():
        raise DatasetError(path, "no corrections store here (no dataset.json)")
    return store


def _list(args) -> int:
    records = _store(args.store).list()
    if args.json:
        print(json.dumps([r.__dict__ for r in records], indent=2))
        return 0
    if not records:
        print("no corrections")
        return 0
    print(f"{'#':>4}  {'time (UTC)':<23}  {'user':<10} {'frame':>5}  changes  file")
    for r in records:
        ch = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.changed.items() if v)
        mark = " (supersedes earlier)" if r.supersedes else ""
        print(f"{r.index:>4}  {r.time[:23]:<23}  {r.user[:10]:<10} {r.frame:>5}  {ch or 'none'}  {r.file}{mark}")
    return 0


def _verify(args) -> int:
    report = _store(args.store).verify()
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "readable_examples": report.n_examples,
                    "bad_shards": [[str(p), why] for p, why in report.bad_shards],
                    "bad_examples": [[str(p), n, why] for p, n, why in report.bad_examples],
                    "temporary_files": [str(p) for p in report.temporary_files],
                },
                indent=2,
            )
        )
    else:
        print(report)
    return 0 if report.ok else 1


def _export(args) -> int:
    n = _store(args.store).export(args.destination, latest_only=not args.all_versions)
    print(f"exported {n} correction(s) to {args.destination}", file=sys.stderr)
    return 0
