// Bundles an example's handler.ts into dist/handler.mjs, with the settings of its SAM template (see
// packages/test-harness/src/bundle-handler.ts). Run from an example's folder (`pnpm run build` there), or give
// the example's folder: `node scripts/bundle-example.ts examples/orders-api`.
import { join, resolve } from "node:path";
import { bundleHandler, describeBundle } from "@middy-conn/test-harness";

const folder = resolve(process.argv[2] ?? process.cwd());
const bundle = await bundleHandler({
	entry: join(folder, "handler.ts"),
	outfile: join(folder, "dist", "handler.mjs"),
});
console.log(describeBundle(bundle));
