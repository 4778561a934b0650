// Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time by package and by function, and the inclusive
// time of the functions whose name or file matches a filter. For finding out why a figure misses its goal:
//
//   node --cpu-prof --cpu-prof-dir=.tmp/prof scripts/bench.ts --only http
//   node scripts/bench/cpu-profile.ts .tmp/prof/CPU.*.cpuprofile [--top 25] [--match http-pool] [--callers fn]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface ProfileNode {
	id: number;
	callFrame: { functionName: string; url: string; lineNumber: number };
	children?: number[];
}

interface Profile {
	nodes: ProfileNode[];
	samples: number[];
	timeDeltas: number[];
	startTime: number;
	endTime: number;
}

const { values, positionals } = parseArgs({
	options: {
		top: { type: "string", default: "25" },
		match: { type: "string" },
		callers: { type: "string" },
	},
	allowPositionals: true,
});
const file = positionals[0];
if (!file) {
	process.stderr.write(
		"usage: node scripts/bench/cpu-profile.ts <file.cpuprofile> [--top N] [--match text] [--callers text]\n",
	);
	process.exit(2);
}
const top = Number(values.top);
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;

/** Which package (or part of Node, or this repo) a script URL belongs to. */
const packageOf = (url: string): string => {
	if (url === "") return "(native / GC / idle)";
	if (url.startsWith("node:")) return url.split("/")[0] ?? url;
	const modules = /node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?((?:@[^/]+\/)?[^/]+)\//.exec(url);
	if (modules?.[1]) return modules[1];
	const workspace = /\/(packages\/[^/]+|scripts|examples\/[^/]+)\//.exec(url);
	return workspace?.[1] ?? url;
};

const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const parent = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);

// Self time per node: each sample's delta goes to the node on top of the stack.
const selfMicros = new Map<number, number>();
profile.samples.forEach((id, index) => {
	selfMicros.set(id, (selfMicros.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0));
});
const total = [...selfMicros.values()].reduce((sum, value) => sum + value, 0);
const idle = [...selfMicros.entries()]
	.filter(([id]) => byId.get(id)?.callFrame.functionName === "(idle)")
	.reduce((sum, [, value]) => sum + value, 0);
const busy = total - idle;

const label = (node: ProfileNode) => {
	const { functionName, url, lineNumber } = node.callFrame;
	const where = url
		? `${url.replace(/^.*\/(node_modules|packages|scripts)\//, "$1/")}:${lineNumber + 1}`
		: "";
	return `${functionName || "(anonymous)"} ${where}`.trim();
};

const add = (map: Map<string, number>, key: string, value: number) =>
	map.set(key, (map.get(key) ?? 0) + value);
const selfByPackage = new Map<string, number>();
const selfByFunction = new Map<string, number>();
const inclusive = new Map<string, number>();
/** For --callers: the call paths (up to 6 frames) under which a matching frame spent its self time. */
const callerPaths = new Map<string, number>();
for (const [id, micros] of selfMicros) {
	const node = byId.get(id);
	if (!node || node.callFrame.functionName === "(idle)") continue;
	add(selfByPackage, packageOf(node.callFrame.url), micros);
	add(selfByFunction, label(node), micros);
	if (values.callers && label(node).includes(values.callers)) {
		const path: string[] = [];
		for (
			let current = parent.get(id);
			current !== undefined && path.length < 6;
			current = parent.get(current)
		) {
			const frame = byId.get(current);
			if (frame) path.push(label(frame));
		}
		add(callerPaths, path.join("\n             ← "), micros);
	}
	// Inclusive: every distinct frame on the stack gets the sample once.
	const seen = new Set<string>();
	for (let current: number | undefined = id; current !== undefined; current = parent.get(current)) {
		const frame = byId.get(current);
		if (!frame) break;
		const key = label(frame);
		if (seen.has(key)) continue;
		seen.add(key);
		add(inclusive, key, micros);
	}
}

const percent = (micros: number) => `${((micros / busy) * 100).toFixed(1).padStart(5)} %`;
const print = (title: string, map: Map<string, number>, filter?: (key: string) => boolean) => {
	process.stdout.write(`\n${title}\n`);
	const rows = [...map.entries()].filter(([key]) => !filter || filter(key)).sort((a, b) => b[1] - a[1]);
	for (const [key, micros] of rows.slice(0, top)) {
		process.stdout.write(`${percent(micros)}  ${(micros / 1000).toFixed(0).padStart(7)} ms  ${key}\n`);
	}
};

process.stdout.write(
	`${file}: ${((profile.endTime - profile.startTime) / 1e6).toFixed(1)} s profiled, ${(busy / 1e6).toFixed(1)} s busy (percentages are of busy time)\n`,
);
print("Self time by package", selfByPackage);
print("Self time by function", selfByFunction);
const match = values.match;
if (match) print(`Inclusive time, frames matching "${match}"`, inclusive, (key) => key.includes(match));
if (values.callers) print(`Callers of "${values.callers}" (self time under each path)`, callerPaths);
