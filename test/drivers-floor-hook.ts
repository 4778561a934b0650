// Loaded with `node --import` into vitest's forks when MIDDY_CONN_DRIVERS=floor (see vitest.config.ts), and so
// into the worker threads they start, which inherit the flag: `mysql2`, `mysql2/promise`, `undici` and
// `@middy/core` resolve to the floor versions there too (see drivers.ts). Registered only under that setting: it redirects unconditionally.
import { registerHooks } from "node:module";
import { floorSpecifier } from "./drivers.ts";

registerHooks({
	resolve(specifier, context, nextResolve) {
		return nextResolve(floorSpecifier(specifier) ?? specifier, context);
	},
});
