//! The CLI module crates/embedkit/src/cache_cli.rs, compiled here so it is built and tested before (and
//! independently of) its wiring into the `embedkit` binary: opening caches from `--cache` specs, and the
//! `cache stats|clear|prune` commands, with counters that persist across runs.

#[path = "../../embedkit/src/cache_cli.rs"]
#[allow(dead_code)]
mod cache_cli;
mod common;

use cache_cli::{CacheArgs, CacheCommand, cache_command, open_cache, parse_duration, parse_size};
use clap::Parser;
use common::{RedisServer, load_tiny};
use embedkit_core::EncodeOptions;
use std::time::Duration;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(Parser)]
struct EmbedLike {
    #[command(flatten)]
    cache: CacheArgs,
}

fn run(home: &std::path::Path, args: &[&str]) -> String {
    let cli = Cli::try_parse_from(std::iter::once("cache").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("parsing {args:?}: {e}"));
    let mut out = Vec::new();
    cache_command(cli.command, home, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// One `embedkit embed` run: opens the cache the flags name, embeds, and exits (drops everything).
fn embed_run(home: &std::path::Path, flags: &[&str], texts: &[&str]) {
    let args =
        EmbedLike::try_parse_from(std::iter::once("embed").chain(flags.iter().copied())).unwrap();
    let cache = args.cache.open(home).unwrap();
    let model = cache_cli::with_cache(load_tiny("bert-mean"), cache);
    model.embed(texts, &EncodeOptions::default()).unwrap();
}

#[test]
fn specs_choose_the_store() {
    let home = tempfile::tempdir().unwrap();
    let default = open_cache(None, false, home.path()).unwrap().unwrap();
    assert!(
        home.path()
            .join("cache")
            .join(embedkit_cache::STORE_FILE)
            .exists()
    );
    assert!(default.describe().ends_with("cache"));
    assert!(open_cache(None, true, home.path()).unwrap().is_none());
    let dir = home.path().join("elsewhere");
    let c = open_cache(Some(dir.to_str().unwrap()), false, home.path())
        .unwrap()
        .unwrap();
    assert_eq!(c.describe(), dir.display().to_string());
    let r = open_cache(Some("redis://u:pw@127.0.0.1:1/2"), false, home.path())
        .unwrap()
        .unwrap();
    assert_eq!(r.describe(), "redis://u:***@127.0.0.1:1/2");
    assert!(open_cache(Some("rediss://127.0.0.1:1/0"), false, home.path()).is_ok());
    assert!(open_cache(Some("http://x"), false, home.path()).is_err());
    assert!(open_cache(Some("redis:/oops"), false, home.path()).is_err());
    // --cache and --no-cache conflict.
    assert!(EmbedLike::try_parse_from(["embed", "--cache", "x", "--no-cache"]).is_err());
}

#[test]
fn durations_and_sizes_parse() {
    assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
    assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
    assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    assert!(parse_duration("soon").is_err());
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert_eq!(parse_size("500M"), Ok(500 << 20));
    assert_eq!(parse_size("1.5KiB"), Ok(1536));
    assert_eq!(parse_size("0"), Ok(0));
    assert!(parse_size("-1G").is_err());
    assert!(parse_size("big").is_err());
}

#[test]
fn stats_persist_across_runs_then_clear_and_prune() {
    let home = tempfile::tempdir().unwrap();
    embed_run(home.path(), &[], &["a", "b", "c"]);
    embed_run(home.path(), &[], &["a", "b", "d"]);
    let text = run(home.path(), &["stats"]);
    assert!(text.contains("hits     2 (33.3 % of 6 lookups)"), "{text}");
    assert!(text.contains("misses   4"), "{text}");
    assert!(text.contains("entries  4"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&run(home.path(), &["stats", "--json"])).unwrap();
    assert_eq!(json["hits"], 2);
    assert_eq!(json["misses"], 4);
    assert_eq!(json["entries"], 4);
    assert!(json["bytes"].as_u64().unwrap() > 4 * 4 * 32);

    // A TTL of one second: after it passes, prune removes those entries.
    embed_run(home.path(), &["--cache-ttl", "1s"], &["short-lived"]);
    std::thread::sleep(Duration::from_millis(1100));
    let pruned = run(home.path(), &["prune"]);
    assert!(
        pruned.starts_with("removed 1 expired and 0 least recently used entries; 4 entries"),
        "{pruned}"
    );
    let pruned = run(home.path(), &["prune", "--max-size", "1"]);
    assert!(
        pruned.contains("0 expired and 4 least recently used entries; 0 entries"),
        "{pruned}"
    );

    embed_run(home.path(), &[], &["x"]);
    assert_eq!(
        run(home.path(), &["clear"]),
        format!(
            "removed 1 entries from {}\n",
            home.path().join("cache").display()
        )
    );
    let json: serde_json::Value =
        serde_json::from_str(&run(home.path(), &["stats", "--json"])).unwrap();
    assert_eq!(
        (json["hits"].as_u64(), json["entries"].as_u64()),
        (Some(0), Some(0))
    );

    // --no-cache leaves the store alone.
    embed_run(home.path(), &["--no-cache"], &["y"]);
    assert!(run(home.path(), &["stats"]).contains("entries  0"));
    // Another folder is another cache.
    let other = home.path().join("other");
    embed_run(home.path(), &["--cache", other.to_str().unwrap()], &["z"]);
    assert!(
        run(home.path(), &["stats", "--cache", other.to_str().unwrap()]).contains("entries  1")
    );
}

#[test]
fn stats_and_clear_on_redis() {
    let server = RedisServer::start();
    let home = tempfile::tempdir().unwrap();
    let url = server.url();
    embed_run(home.path(), &["--cache", &url], &["a", "b"]);
    embed_run(home.path(), &["--cache", &url], &["a", "c"]);
    let text = run(home.path(), &["stats", "--cache", &url]);
    assert!(text.contains("hits     1"), "{text}");
    assert!(text.contains("misses   3"), "{text}");
    assert!(text.contains("entries  3"), "{text}");
    assert!(run(home.path(), &["prune", "--cache", &url]).contains("3 entries"));
    assert!(run(home.path(), &["clear", "--cache", &url]).starts_with("removed 3 entries"));
    assert!(run(home.path(), &["stats", "--cache", &url]).contains("entries  0"));
}
