# Build, install and package pilfered (`make help` lists the targets).
#
#   make                      build the release binary and the man page generator
#   sudo make install         install under PREFIX (default /usr/local)
#   sudo make uninstall       remove exactly what install put there
#   make deb                  build target/debian/pilfered_*.deb (cargo-deb)
#   make check                the CI checks: formatting, lints, shellcheck, cargo test
#   make clean                remove everything built (cargo clean)
#
# install and uninstall honour PREFIX and DESTDIR (a staging root, as
# packagers use: `make install DESTDIR=/tmp/stage PREFIX=/usr`). install
# builds the release binary and the man page generator when they are
# missing or older than the sources. The install test passes the binaries
# `cargo test` already built instead: PILFERED_BIN=... ASSETS_GEN=...
#
# Paths must not contain spaces.

PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo

# The daemon to install, and the program that writes the man pages and
# shell completions from the clap definitions (tools/pilfered-assets.rs,
# built with the feature `assets`, and never installed).
PILFERED_BIN ?= target/release/pilfered
ASSETS_GEN ?= target/release/pilfered-assets
# Where the generated files (man pages, completions, the unit for PREFIX)
# are written before they are installed.
GENDIR ?= target/install-assets

bindir := $(PREFIX)/bin
sbindir := $(PREFIX)/sbin
pkglibdir := $(PREFIX)/lib/pilfered
# With PREFIX=/usr this is /usr/lib/systemd/system; systemd also reads
# /usr/local/lib/systemd/system.
unitdir := $(PREFIX)/lib/systemd/system
man1dir := $(PREFIX)/share/man/man1
man8dir := $(PREFIX)/share/man/man8
docdir := $(PREFIX)/share/doc/pilfered
bashcompdir := $(PREFIX)/share/bash-completion/completions
fishcompdir := $(PREFIX)/share/fish/vendor_completions.d
# zsh searches $prefix/share/zsh/site-functions for its own prefix; Debian's
# zsh (prefix /usr) has /usr/local/share/zsh/site-functions and, for
# packages, /usr/share/zsh/vendor-completions, but not
# /usr/share/zsh/site-functions. Override with ZSH_COMPDIR=... elsewhere.
ZSH_COMPDIR ?= $(if $(filter /usr,$(PREFIX)),/usr/share/zsh/vendor-completions,$(PREFIX)/share/zsh/site-functions)

# mount(8) looks for mount.fuse.pilfered only in /sbin (and /sbin/fs.d,
# /sbin/fs): unless sbindir is /sbin or /usr/sbin (the same directory on a
# merged-/usr system such as Debian 12), /sbin gets a symlink to it.
SBIN_LINK := $(if $(filter /sbin /usr/sbin,$(sbindir)),,/sbin/mount.fuse.pilfered)

# The pages tools/pilfered-assets.rs writes: pilfered(1) and one per
# subcommand (tests/it/install.rs checks that this list is complete).
MANPAGES := pilfered pilfered-serve pilfered-roll pilfered-nonce pilfered-status
# The scripts' pages, written by hand next to them in mount-scripts/.
MANPAGES8 := pilfered-mount pilfered-umount mount.fuse.pilfered
# The systemd units, templates in mount-scripts/ filled in for PREFIX.
UNITS := pilfered.service pilfered.socket
DOCS := README.md $(wildcard docs/*.md)

# Everything install puts in place, once: MODE:SOURCE:DESTINATION (under
# DESTDIR). uninstall removes the same destinations, the /sbin link and the
# package's own directories, and nothing else.
FILES := \
	755:$(PILFERED_BIN):$(bindir)/pilfered \
	755:mount-scripts/pilfered-mount:$(bindir)/pilfered-mount \
	755:mount-scripts/pilfered-umount:$(bindir)/pilfered-umount \
	755:mount-scripts/mount.fuse.pilfered:$(sbindir)/mount.fuse.pilfered \
	644:mount-scripts/pilfered-lib.sh:$(pkglibdir)/pilfered-lib.sh \
	$(foreach u,$(UNITS),644:$(GENDIR)/$(u):$(unitdir)/$(u)) \
	$(foreach m,$(MANPAGES),644:$(GENDIR)/man/$(m).1:$(man1dir)/$(m).1) \
	$(foreach m,$(MANPAGES8),644:mount-scripts/$(m).8:$(man8dir)/$(m).8) \
	644:$(GENDIR)/completions/pilfered.bash:$(bashcompdir)/pilfered \
	644:$(GENDIR)/completions/_pilfered:$(ZSH_COMPDIR)/_pilfered \
	644:$(GENDIR)/completions/pilfered.fish:$(fishcompdir)/pilfered.fish \
	$(foreach d,$(DOCS),644:$(d):$(docdir)/$(d))
OWN_DIRS := $(pkglibdir) $(docdir)/docs $(docdir)

SOURCES := $(shell find src tools -name '*.rs') Cargo.toml Cargo.lock
SCRIPTS := mount-scripts/pilfered-lib.sh mount-scripts/pilfered-mount \
	mount-scripts/pilfered-umount mount-scripts/mount.fuse.pilfered

.PHONY: all build assets install uninstall deb lint check clean help

all: build
build: target/release/pilfered target/release/pilfered-assets

# One cargo run builds both, with one build of the library; only what
# installing needs: no test, benchmark or dev-dependency. The touch tells
# make they are current even when cargo found nothing to do.
target/release/pilfered target/release/pilfered-assets &: $(SOURCES)
	$(CARGO) build --release --locked --features assets --bin pilfered --bin pilfered-assets
	touch target/release/pilfered target/release/pilfered-assets

# Regenerated at every install: it takes milliseconds, and the units depend
# on PREFIX.
assets: $(ASSETS_GEN) $(foreach u,$(UNITS),mount-scripts/$(u).in)
	mkdir -p $(GENDIR)
	$(ASSETS_GEN) $(GENDIR)
	for u in $(UNITS); do \
		sed -e 's|@BINDIR@|$(bindir)|g' -e 's|@DOCDIR@|$(docdir)|g' \
			mount-scripts/$$u.in >$(GENDIR)/$$u || exit 1; \
	done

install: $(PILFERED_BIN) assets
	@set -e; for f in $(FILES); do \
		mode=$${f%%:*}; rest=$${f#*:}; src=$${rest%%:*}; dest=$${rest#*:}; \
		echo "install -D -m $$mode $$src $(DESTDIR)$$dest"; \
		install -D -m "$$mode" "$$src" "$(DESTDIR)$$dest"; \
	done
ifneq ($(SBIN_LINK),)
	install -d "$(DESTDIR)$(dir $(SBIN_LINK))"
	ln -sfn "$(sbindir)/mount.fuse.pilfered" "$(DESTDIR)$(SBIN_LINK)"
endif

uninstall:
	@set -e; for f in $(FILES); do \
		dest="$(DESTDIR)$${f##*:}"; \
		if [ -e "$$dest" ] || [ -L "$$dest" ]; then echo "rm $$dest"; rm -f "$$dest"; fi; \
	done
ifneq ($(SBIN_LINK),)
	@link="$(DESTDIR)$(SBIN_LINK)"; \
	if [ -L "$$link" ] && [ "$$(readlink "$$link")" = "$(sbindir)/mount.fuse.pilfered" ]; then \
		echo "rm $$link"; rm -f "$$link"; \
	fi
endif
	@for d in $(OWN_DIRS); do \
		if [ -d "$(DESTDIR)$$d" ]; then rmdir --ignore-fail-on-non-empty "$(DESTDIR)$$d"; fi; \
	done

# The Debian package: the same files, staged by `make install` with
# PREFIX=/usr into DEB_ROOT, then packed by cargo-deb with the metadata in
# Cargo.toml ([package.metadata.deb], whose assets are DEB_ROOT's tree).
DEB_ROOT := target/deb-root
deb: build
	rm -rf $(DEB_ROOT)
	$(MAKE) --no-print-directory install PREFIX=/usr DESTDIR=$(CURDIR)/$(DEB_ROOT) \
		GENDIR=target/deb-assets PILFERED_BIN=target/release/pilfered \
		ASSETS_GEN=target/release/pilfered-assets
	$(CARGO) deb --no-build --locked

# The checks CI runs besides the package's (.ci/run): formatting, lints and
# the shell scripts; `check` adds the tests.
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	shellcheck -x .ci/run benches/*.sh $(SCRIPTS)

check: lint
	$(CARGO) test --locked

clean:
	$(CARGO) clean

help:
	@echo 'make              build the release binary and the man page generator'
	@echo 'make install      install under PREFIX (default /usr/local; DESTDIR stages it)'
	@echo 'make uninstall    remove exactly what install put there (same PREFIX)'
	@echo 'make deb          build target/debian/pilfered_*.deb (needs cargo-deb)'
	@echo 'make lint         cargo fmt --check, cargo clippy, shellcheck'
	@echo 'make check        lint, then cargo test (as root, with /dev/fuse)'
	@echo 'make clean        remove everything built (cargo clean)'
	@echo 'make help         this list'

