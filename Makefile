# Build, install and package pilfered.
#
#   make                      build the release binary (cargo build --release)
#   sudo make install         install under PREFIX (default /usr/local)
#   sudo make uninstall       remove exactly what install put there
#   make deb                  build target/debian/pilfered_*.deb (cargo-deb)
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
# shell completions from the clap definitions (examples/pilfered-assets.rs).
PILFERED_BIN ?= target/release/pilfered
ASSETS_GEN ?= target/release/examples/pilfered-assets
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

# The pages examples/pilfered-assets.rs writes: pilfered(1) and one per
# subcommand (tests/it/install.rs checks that this list is complete).
MANPAGES := pilfered pilfered-serve pilfered-roll pilfered-nonce pilfered-status
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
	644:$(GENDIR)/pilfered.service:$(unitdir)/pilfered.service \
	$(foreach m,$(MANPAGES),644:$(GENDIR)/man/$(m).1:$(man1dir)/$(m).1) \
	644:$(GENDIR)/completions/pilfered.bash:$(bashcompdir)/pilfered \
	644:$(GENDIR)/completions/_pilfered:$(ZSH_COMPDIR)/_pilfered \
	644:$(GENDIR)/completions/pilfered.fish:$(fishcompdir)/pilfered.fish \
	$(foreach d,$(DOCS),644:$(d):$(docdir)/$(d))
OWN_DIRS := $(pkglibdir) $(docdir)/docs $(docdir)

SOURCES := $(shell find src examples -name '*.rs') Cargo.toml Cargo.lock

.PHONY: all build assets install uninstall deb

all: build
build: target/release/pilfered

# One cargo run builds both (they share the library); the touch tells make
# they are current even when cargo found nothing to do.
target/release/pilfered target/release/examples/pilfered-assets &: $(SOURCES)
	$(CARGO) build --release --locked --bin pilfered --example pilfered-assets
	touch target/release/pilfered target/release/examples/pilfered-assets

# Regenerated at every install: it takes milliseconds, and the unit depends
# on PREFIX.
assets: $(ASSETS_GEN) mount-scripts/pilfered.service.in
	mkdir -p $(GENDIR)
	$(ASSETS_GEN) $(GENDIR)
	sed -e 's|@BINDIR@|$(bindir)|g' -e 's|@DOCDIR@|$(docdir)|g' \
		mount-scripts/pilfered.service.in >$(GENDIR)/pilfered.service

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
deb: build target/release/examples/pilfered-assets
	rm -rf $(DEB_ROOT)
	$(MAKE) --no-print-directory install PREFIX=/usr DESTDIR=$(CURDIR)/$(DEB_ROOT) \
		GENDIR=target/deb-assets PILFERED_BIN=target/release/pilfered \
		ASSETS_GEN=target/release/examples/pilfered-assets
	$(CARGO) deb --no-build --locked
