// `pnpm bench`: what reuse buys and what the middlewares cost, measured side by side in one run (issue 6).
//
//   pnpm bench                  full run (a few minutes), rewrites docs/benchmarks.md and docs/benchmarks.svg
//   pnpm bench --quick          every group for a few seconds (CI: checks the harness works, asserts no timing);
//                               the report goes to .tmp/bench/ unless --write is given
//   pnpm bench --only http,db   some groups only: http, db, overhead, cold-start, memory
//   pnpm bench --out <dir>      write the report to <dir> instead
//
// To profile one group: node --cpu-prof --cpu-prof-dir=.tmp/prof scripts/bench.ts --only http
import { mkdirSync } from "node:fs";
import { parseArgs } from "node:util";
import { runColdStartGroup } from "./bench/cold-start.ts";
import { runDbGroup } from "./bench/db.ts";
import { runHttpGroup } from "./bench/http.ts";
import { runMemoryGroup } from "./bench/memory.ts";
import { loadHttpPool, loadMysql } from "./bench/middlewares.ts";
import { runOverheadGroup } from "./bench/overhead.ts";
import { type DbPeer, type HttpPeer, startDbPeer, startHttpPeer } from "./bench/peers.ts";
import { type BenchResults, machineInfo, writeReport } from "./bench/report.ts";
import type { Mode } from "./bench/settings.ts";
import { runScript } from "./cleanup.ts";

const GROUPS = ["http", "db", "overhead", "cold-start", "memory"] as const;
type Group = (typeof GROUPS)[number];

const { values } = parseArgs({
	options: {
		quick: { type: "boolean", default: false },
		write: { type: "boolean", default: false },
		only: { type: "string" },
		out: { type: "string" },
		help: { type: "boolean", short: "h", default: false },
	},
	strict: true,
});

if (values.help) {
	process.stdout.write(
		"usage: pnpm bench [--quick] [--write] [--only http,db,overhead,cold-start,memory] [--out <dir>]\n",
	);
	process.exit(0);
}

const only = values.only?.split(",").map((group) => group.trim());
for (const group of only ?? []) {
	if (!(GROUPS as readonly string[]).includes(group)) {
		process.stderr.write(`unknown group "${group}"; groups: ${GROUPS.join(", ")}\n`);
		process.exit(2);
	}
}
const selected = (group: Group) => !only || only.includes(group);

// Full runs of every group replace the committed report; anything partial or quick goes to .tmp/ unless asked.
const complete = !values.quick && !only;
const outDir = values.out ?? (complete || values.write ? "docs" : ".tmp/bench");

const startedAt = Date.now();
const log = (line: string) => process.stderr.write(`${line}\n`);
const mode: Mode = { quick: values.quick, log };

const main = async (): Promise<number> => {
	log(`[bench] ${values.quick ? "quick" : "full"} run, groups: ${GROUPS.filter(selected).join(", ")}`);
	const [httpPoolLoad, mysqlLoad] = await Promise.all([loadHttpPool(), loadMysql()]);
	for (const load of [httpPoolLoad, mysqlLoad])
		if (load.problem) log(`[bench] skipped contenders: ${load.problem}`);

	const needsHttp = selected("http") || selected("overhead") || selected("memory");
	const needsDb = selected("db") || selected("overhead") || selected("memory");
	const [http, db]: [HttpPeer | undefined, DbPeer | undefined] = await Promise.all([
		needsHttp ? startHttpPeer() : undefined,
		needsDb ? startDbPeer() : undefined,
	]);

	const results: BenchResults = {
		quick: values.quick,
		machine: machineInfo(),
		mysqlVersion: db?.version,
		startedAt: new Date(startedAt).toISOString(),
		elapsedMs: 0,
		missing: [httpPoolLoad.problem, mysqlLoad.problem].filter((problem) => problem !== undefined),
		comparisons: [],
		coldStart: undefined,
		memory: undefined,
	};

	if (selected("http") && http) {
		log("\n== HTTP ==");
		results.comparisons.push(...(await runHttpGroup(mode, http, httpPoolLoad.module)));
		const stats = await http.stats();
		log(`  (peer saw ${stats.connections} connections, ${stats.requests} requests)`);
	}
	if (selected("db") && db) {
		log("\n== DB ==");
		results.comparisons.push(...(await runDbGroup(mode, db)));
	}
	if (selected("overhead") && http && db) {
		log("\n== Overhead ==");
		results.comparisons.push(...(await runOverheadGroup(mode, { http, db })));
	}
	if (selected("cold-start")) {
		log("\n== Cold start ==");
		results.coldStart = await runColdStartGroup(mode);
		results.missing.push(...results.coldStart.problems);
	}
	if (selected("memory") && http && db) {
		log("\n== Memory ==");
		results.memory = await runMemoryGroup(
			mode,
			{ http, db },
			Boolean(httpPoolLoad.module && mysqlLoad.module),
		);
	}

	results.elapsedMs = Date.now() - startedAt;
	mkdirSync(outDir, { recursive: true });
	const written = writeReport(results, outDir);
	log(`\n[bench] done in ${(results.elapsedMs / 1000).toFixed(0)} s; wrote ${written.join(", ")}`);
	return 0;
};

// Every exit path stops the servers and children (scripts/cleanup.ts), then exits: warm pools created inside
// middlewares (one per execution environment by design) keep sockets open, and the run must not wait for their
// keep-alive timers.
await runScript("bench", main, {
	onError: (error) =>
		log(`[bench] failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`),
});
