# Recipes mirror what CI runs (.ci/run). The README's commands need only cargo.

# Run the server on ./akstore.redb and 127.0.0.1:8080.
run *ARGS:
    cargo run --release -- serve {{ARGS}}

# Run every test, the failpoint tests included, as CI does.
test:
    cargo test --workspace --features failpoints

# The Azure SDK compatibility suite (Python, in tests/sdk/.venv), as CI runs it.
sdk *ARGS:
    tests/sdk/run {{ARGS}}

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --features failpoints -- -D warnings

# Kill harness on the release binary, 300 cycles by default (CRASH_SEED reproduces a run).
crash cycles=env_var_or_default("CRASH_CYCLES", "300"):
    CRASH_CYCLES={{cycles}} cargo test --release --features failpoints --test crash -- --nocapture

# Everything CI runs.
ci:
    bash .ci/run

# Compare akstore with etcd side by side and print the tables (about 6 minutes; installs
# Debian's etcd-server when missing). Extra arguments go to `akstore-bench compare`.
bench *ARGS:
    bash scripts/bench.sh {{ARGS}}
