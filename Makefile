# kdstub — two commands on a fresh Debian machine: `make demo` and `make test`.

GO        ?= go
BIN       := bin/kdstub
PKGS      := ./...
# Debian packages the tests and the demo need, keyed by the command each one provides.
DEB_CMDS  := qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils as:binutils ld:binutils objcopy:binutils mkntfs:ntfs-3g
TEST_TIMEOUT ?= 75m

.PHONY: all deps build test vet fmtcheck unit bench fuzz demo clean

all: build

# deps installs whatever is missing with apt-get (as root, or through sudo when it is available).
deps:
	@missing=""; for pair in $(DEB_CMDS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  pkgs=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	  echo "make deps: installing$$pkgs"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$pkgs; \
	fi
	@command -v $(GO) >/dev/null || { echo "make deps: Go 1.26 is required (https://go.dev/dl)"; exit 1; }

build:
	$(GO) build -o $(BIN) ./cmd/kdstub

vet:
	$(GO) vet $(PKGS)

fmtcheck:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt -l reports:"; echo "$$out"; exit 1; fi

# unit runs every test, fuzz seed corpora included, with the race detector.
unit:
	$(GO) test -race -timeout $(TEST_TIMEOUT) $(PKGS)

test: deps vet fmtcheck unit

bench: deps
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m $(PKGS)

# fuzz runs each fuzz target for FUZZTIME (go test allows one target per invocation).
FUZZTIME ?= 60s
fuzz:
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg || exit 1; \
	  done; done

demo: deps build
	./$(BIN) demo

clean:
	rm -rf bin
