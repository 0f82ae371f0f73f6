# Tender — containerd shim v2 (containerd-shim-tender-v2)
#
#   make build   release build (static executable in target/release/)
#   make deps    install host packages (containerd, runc, crun, busybox-static, ...) and
#                fetch containerd 1.7.24 / 2.1.9, Docker 28.5.2 and kubectl from Debian's
#                trixie/sid into a private cache (scripts/fetch-matrix.sh; nothing installed)
#   make test    unit + end-to-end tests (e2e needs root; CI=true makes skips fail) on the
#                host's containerd 1.6 (Docker's tests on 2.1), then the lifecycle and
#                resources e2e tests again with crun (CRUN_PASS=0 skips that pass), then
#                the version matrix (MATRIX=0 skips it): every end-to-end suite on
#                containerd 2.1.9 (and the installer image), and lifecycle/exec/CRI/restart/
#                parity/Docker/installer on 1.7.24
#   make demo    run a container through a private containerd with Tender
#   make lint    rustfmt check + clippy with warnings denied
#   make bench   shim scorecard (bench/results.md), then the pod benchmark (bench/pods.md)
#   make bench-pods  the pod benchmark alone (issue 14: Go shim + pause, Tender + pause,
#                Tender as shim sandboxer on containerd 2.1.9)
#
# TENDER_E2E_RUNTIME=io.containerd.runc.v2 make test   checks the e2e tests
# against containerd's Go shim instead of Tender.
# TENDER_E2E_RUNTIME_BINARY=crun runs the e2e containers with crun instead of runc
# (on a hybrid cgroup host the test containerd then runs in a private mount namespace
# without /sys/fs/cgroup/unified, which crun 1.8 refuses).

CARGO ?= cargo
TEST_THREADS ?= 4
CRUN_PASS ?= 1
MATRIX ?= 1
# The end-to-end suites (each starts private containerds; see tests/common/mod.rs).
E2E_ALL = --test 'e2e_*' --test hostile_input --test protocol --test deploy
E2E_17 = --test e2e_lifecycle --test e2e_exec_stdio --test e2e_exit_latency --test e2e_cri \
	--test e2e_restart_faults --test e2e_parity --test e2e_docker --test e2e_install \
	--test deploy

.PHONY: all build deps test demo lint bench bench-pods memcheck

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
ifneq ($(MATRIX),0)
	TENDER_E2E_CONTAINERD=2.1 $(CARGO) test $(E2E_ALL) -- --test-threads=$(TEST_THREADS)
	TENDER_E2E_CONTAINERD=1.7 $(CARGO) test $(E2E_17) -- --test-threads=$(TEST_THREADS)
endif

demo:
	./scripts/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Tender vs the Go runc v2 shim via ../shared/bench/shimbench -> bench/results.md, then the
# pod benchmark -> bench/pods.md (BENCH_QUICK=1 for a quick run of both; see scripts/bench.sh
# and scripts/bench-pods.sh for knobs)
bench:
	./scripts/bench.sh
	./scripts/bench-pods.sh

# CRI pods on one containerd 2.1.9: Go shim + pause, Tender + pause, Tender as shim sandboxer
# (pod start/teardown, infrastructure PSS per pod) -> bench/pods.md
bench-pods:
	./scripts/bench-pods.sh

# memory budget per shim (PSS/RSS/threads) with MEMCHECK_N sleep containers
memcheck:
	./scripts/memcheck.sh
