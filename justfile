# Developer shortcuts. CI does not need `just`: see .ci/run.

# Run the server (SQLite in ./newspaper.db, in-memory channel layer, debug mode).
run:
    cargo run --release -p newspaper-server -- --debug

# Every test (PostgreSQL/Redis variants run when NEWSPAPER_TEST_POSTGRES_URL / NEWSPAPER_TEST_REDIS_URL are set).
test:
    cargo test --workspace

# Lints exactly as CI runs them (cargo-machete: `cargo install --locked cargo-machete`).
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
    cargo machete

# Format the code.
fmt:
    cargo fmt --all

# Headless-browser tests of the demo page (need Debian's chromium and firefox-esr).
e2e:
    cargo build --workspace --examples
    NEWSPAPER_REQUIRE_SERVICES=1 cargo test -p newspaper-tests --test browser --test firefox -- --nocapture

# The OpenAPI contract: openapi-spec-validator and schemathesis against the release server.
contract:
    .ci/contract

# Benchmarks of docs/benchmarks.md (release build, fresh server per scenario).
bench *scenarios:
    apps/loadgen/bench.sh {{scenarios}}

# Everything CI does.
ci:
    .ci/run

# Regenerate crates/persistence/src/schema.rs (needs diesel_cli with SQLite).
schema:
    rm -f /tmp/newspaper-schema.db
    diesel migration run --database-url /tmp/newspaper-schema.db
    diesel print-schema --database-url /tmp/newspaper-schema.db > crates/persistence/src/schema.rs

# Accept an intended change of the OpenAPI contract.
openapi-snapshot:
    UPDATE_SNAPSHOTS=1 cargo test -p newspaper-tests --test openapi
