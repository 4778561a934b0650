// Where httpPool's time goes, piece by piece (scripts/bench/analysis.md): a bare undici Pool, the same with one
// piece of httpPool added, and httpPool with one piece taken away, all in the same middy handler, in interleaved
// rounds against the benchmark's HTTPS peer. Not part of `pnpm bench`; run it by hand:
//
//   node scripts/bench/http-ablation.ts [--budget 20000]
import { parseArgs } from "node:util";
import middy from "@middy/core";
import { Dispatcher, interceptors, Pool } from "undici";
import { runScript } from "../cleanup.ts";
import { invoker } from "./lambda.ts";
import { loadHttpPool } from "./middlewares.ts";
import { startHttpPeer } from "./peers.ts";
import { type Contender, formatMs, runComparison } from "./runner.ts";

const { values } = parseArgs({ options: { budget: { type: "string", default: "20000" } } });

const main = async () => {
	const peer = await startHttpPeer();
	const { origin, ca } = peer;
	const loaded = await loadHttpPool();
	if (!loaded.module) throw new Error(loaded.problem);
	const { httpPool } = loaded.module;
	const connect = { ca };
	const get = async (dispatcher: Dispatcher) => {
		const { statusCode, body } = await dispatcher.request({ origin, path: "/json", method: "GET" });
		if (statusCode !== 200) throw new Error(`HTTP ${statusCode}`);
		return body.json();
	};
	/** What `context.http` is, minus everything it does: a Dispatcher that forwards to the pool. */
	class Forwarding extends Dispatcher {
		readonly #inner: Dispatcher;
		constructor(inner: Dispatcher) {
			super();
			this.#inner = inner;
		}
		override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler) {
			return this.#inner.dispatch({ ...opts, origin }, handler);
		}
	}
	const pools = Array.from({ length: 3 }, () => new Pool(origin, { connections: 4, connect }));
	const [bare, forwarded, retried] = pools as [Pool, Pool, Pool];
	const withRetry = retried.compose(interceptors.retry({ statusCodes: [] }));
	// Built before they are wrapped: inside invoker(), middy's handler types would be inferred from its `never`.
	const withHttpPool = middy()
		.use(httpPool({ origin, connections: 4, connect }))
		.handler(async (_event: unknown, context) => get(context.http));
	const withoutRetry = middy()
		.use(httpPool({ origin, connections: 4, connect, retry: false, contextKey: "noRetry" }))
		.handler(async (_event: unknown, context) => get(context.noRetry));
	const middlewareOnly = middy()
		.use(httpPool({ origin, connections: 4, connect, contextKey: "unused" }))
		.handler(async () => get(bare));
	const contenders: Contender[] = [
		{ name: "bare Pool", invoke: invoker(middy(async () => get(bare))) },
		{ name: "bare Pool + undici's retry interceptor", invoke: invoker(middy(async () => get(withRetry))) },
		{
			name: "bare Pool through a forwarding Dispatcher",
			invoke: invoker(middy(async () => get(new Forwarding(forwarded)))),
		},
		{ name: "httpPool", invoke: invoker(withHttpPool) },
		{ name: "httpPool, retry: false", invoke: invoker(withoutRetry) },
		{ name: "httpPool's middleware, the request on a bare Pool", invoke: invoker(middlewareOnly) },
	];
	const result = await runComparison(
		{
			id: "http-ablation",
			title: "httpPool, piece by piece",
			reference: "bare Pool",
			contenders,
			batch: 20,
			warmup: 200,
			minRounds: 20,
			maxRounds: 100_000,
			budgetMs: Number(values.budget),
		},
		() => {},
	);
	for (const contender of result.contenders) {
		const [low, high] = contender.ratioIqr;
		process.stdout.write(
			`${contender.name.padEnd(52)} ${formatMs(contender.stats.median).padStart(9)}  ×${contender.ratio.toFixed(3)}  (per-round IQR ${low.toFixed(2)}–${high.toFixed(2)})\n`,
		);
	}
	await Promise.all(pools.map((pool) => pool.close()));
	return 0;
};

await runScript("http-ablation", main, {
	onError: (error) => process.stderr.write(`[http-ablation] failed: ${String(error)}\n`),
});
