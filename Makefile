# clipdenoise: the two quick-start commands are `make demo` and `make test`.
SHELL := /bin/bash
ENV := . scripts/env.sh &&
# libgomp threads sleep instead of spinning when they wait: on small shared machines
# (2 cores, tests in parallel) spinning threads starve each other.
export OMP_WAIT_POLICY ?= PASSIVE
export GST_REGISTRY ?= $(CURDIR)/target/gst-registry.bin

.PHONY: setup build demo test lint bench-cpu install

setup:
	@bash scripts/setup.sh

build: setup

# Denoise the sample clip with the shipped default model; prints where the result is.
demo: setup
	@$(ENV) ./target/release/clipdenoise video samples/bedroom-noisy.mp4 target/demo/bedroom-denoised.mp4 --force --side-by-side target/demo/bedroom-before-after.png

# Every test, as CI runs them.
test: setup
	@$(ENV) cargo fmt --all --check
	@$(ENV) cargo clippy --release --workspace --all-targets -- -D warnings
	@$(ENV) cargo build --release --workspace
	@$(ENV) cargo test --release --workspace

# Re-run the CPU benchmark table of benchmarks/README.md.
bench-cpu: setup
	@$(ENV) bash benchmarks/run-cpu.sh

# Copy the plugin where GStreamer looks for user plugins: the plugin file (the loader, which
# chooses OpenMP's wait policy before libtorch loads) and the element library it loads from
# its own folder. Built on their own first: in a workspace build the core carries the CLI's
# features (import, fetch, research) into the element too; alone, it links the core's
# runtime only (a smaller .so).
PLUGIN_DIR := $(HOME)/.local/share/gstreamer-1.0/plugins
install: setup
	@$(ENV) cargo build --release --quiet -p gst-plugin-clipdenoise -p gst-plugin-clipdenoise-loader
	install -d $(PLUGIN_DIR)
	install -m 0644 target/release/libgstclipdenoise.so target/release/libgstclipdenoise_element.so $(PLUGIN_DIR)/
	@echo "installed $(PLUGIN_DIR)/libgstclipdenoise.so and libgstclipdenoise_element.so"
