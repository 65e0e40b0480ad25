#!/usr/bin/env node
// The package's command: the CLI compiled into dist/ (built by `npm pack`/`npm install` in a checkout, shipped built
// in the package). Node resolves this file's symlink (a global install's <prefix>/bin/nginx-lb), so the path is
// relative to the package, wherever it is installed.
import "../dist/cli/main.js";
