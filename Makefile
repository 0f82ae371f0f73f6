# Tender — containerd shim v2 (containerd-shim-tender-v2)
#
#   make build   release build (static executable in target/release/)
#   make deps    install host packages (containerd, runc, crun, busybox-static, ...)
#   make test    unit + end-to-end tests (e2e needs root; CI=true makes skips fail),
#                then the lifecycle and resources e2e tests again with crun
#                (CRUN_PASS=0 skips that second pass)
#   make demo    run a container through a private containerd with Tender
#   make lint    rustfmt check + clippy with warnings denied
#
# TENDER_E2E_RUNTIME=io.containerd.runc.v2 make test   checks the e2e tests
# against containerd's Go shim instead of Tender.
# TENDER_E2E_RUNTIME_BINARY=crun runs the e2e containers with crun instead of runc
# (on a hybrid cgroup host the test containerd then runs in a private mount namespace
# without /sys/fs/cgroup/unified, which crun 1.8 refuses).

CARGO ?= cargo
TEST_THREADS ?= 4
CRUN_PASS ?= 1

.PHONY: all build deps test demo lint bench memcheck

all: build

build:
	CARGO=$(CARGO) ./scripts/build-release.sh

deps:
	./scripts/install-deps.sh

test: deps
	$(CARGO) build
	$(CARGO) test -- --test-threads=$(TEST_THREADS)
ifneq ($(CRUN_PASS),0)
	TENDER_E2E_RUNTIME_BINARY=crun $(CARGO) test --test e2e_lifecycle --test e2e_resources \
		-- --test-threads=$(TEST_THREADS)
endif

demo:
	./scripts/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Tender vs the Go runc v2 shim via ../shared/bench/shimbench -> bench/results.md
# (BENCH_QUICK=1 for a ~20 s smoke run; see scripts/bench.sh for knobs)
bench:
	./scripts/bench.sh

# memory budget per shim (PSS/RSS/threads) with MEMCHECK_N sleep containers
memcheck:
	./scripts/memcheck.sh
