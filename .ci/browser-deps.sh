#!/usr/bin/env bash
# Browser smoke test dependencies (tests/course/test_browser.py): Debian's Chromium and its chromedriver.
# Exits 0 when they are already installed. Never fails the CI: without apt (or root) it prints a warning,
# and the browser test then skips itself with the reason.
set -u

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "browser-deps: chromium and chromedriver already installed ($(chromium --version 2>/dev/null | head -n1))"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: browser-deps: apt-get not available; chromium/chromedriver not installed (the browser test will be skipped)" >&2
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "warning: browser-deps: not root and no passwordless sudo; chromium/chromedriver not installed (the browser test will be skipped)" >&2
    exit 0
  fi
fi

export DEBIAN_FRONTEND=noninteractive
if $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
   && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; then
  echo "browser-deps: installed $(chromium --version 2>/dev/null | head -n1)"
else
  echo "warning: browser-deps: apt-get could not install chromium chromium-driver (the browser test will be skipped)" >&2
fi
exit 0
