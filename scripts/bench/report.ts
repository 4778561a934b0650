// The report: docs/benchmarks.md (a table per group, the goals, the machine) and docs/benchmarks.svg (a bar
// chart of per-invocation medians, log scale: the contenders span nanoseconds to a hundred milliseconds).
// The raw results go to .tmp/bench/results.json for anyone who wants to dig further.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { fileURLToPath } from "node:url";
import type { ColdStartResult } from "./cold-start.ts";
import { evaluateGoals, type GoalOutcome } from "./goals.ts";
import type { MemoryResult } from "./memory.ts";
import { type ComparisonResult, formatMs } from "./runner.ts";

export interface MachineInfo {
	cpu: string;
	cores: number;
	memoryGiB: number;
	os: string;
	/** 1-minute load average when the run started: other work on the machine widens the spread. */
	loadAverage: number;
	node: string;
	v8: string;
	undici: string;
	mysql2: string;
	middy: string;
	/** The commit measured, and whether the packages had uncommitted changes (they are measured as they are). */
	commit: string;
}

export interface BenchResults {
	quick: boolean;
	machine: MachineInfo;
	mysqlVersion: string | undefined;
	startedAt: string;
	elapsedMs: number;
	/** Middleware packages that could not be loaded: their contenders are absent. */
	missing: string[];
	comparisons: ComparisonResult[];
	coldStart: ColdStartResult | undefined;
	memory: MemoryResult | undefined;
}

const root = fileURLToPath(new URL("../../", import.meta.url));
const analysisFile = fileURLToPath(new URL("./analysis.md", import.meta.url));

const versionOf = (name: string): string => {
	try {
		return (
			JSON.parse(readFileSync(`${root}node_modules/${name}/package.json`, "utf8")) as { version: string }
		).version;
	} catch {
		return "?";
	}
};

export const machineInfo = (): MachineInfo => {
	const cpus = os.cpus();
	return {
		cpu: cpus[0]?.model.trim() ?? "unknown",
		cores: cpus.length,
		memoryGiB: Math.round(os.totalmem() / 2 ** 30),
		os: `${os.type()} ${os.release()} ${os.arch()}`,
		loadAverage: os.loadavg()[0] ?? 0,
		node: process.version,
		v8: process.versions.v8,
		undici: versionOf("undici"),
		mysql2: versionOf("mysql2"),
		middy: versionOf("@middy/core"),
		commit: commitOf(),
	};
};

const commitOf = (): string => {
	const git = (args: string[]) =>
		execFileSync("git", args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
	try {
		const dirty = git(["status", "--porcelain", "--", "packages"]) !== "";
		return `${git(["rev-parse", "--short", "HEAD"])}${dirty ? " with uncommitted changes in packages/" : ""}`;
	} catch {
		return "unknown (not a git checkout)";
	}
};

/** Names of contenders that are the middlewares under test: highlighted in the tables and the chart. */
const isOurs = (name: string) => /httpPool|mysqlConnection|orders-api/.test(name);

const escapeCell = (text: string) => text.replaceAll("|", "\\|");
const escapeXml = (text: string) =>
	text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");

const ratioText = (ratio: number) => (ratio >= 10 ? ratio.toFixed(1) : ratio.toFixed(3));

const comparisonTable = (comparison: ComparisonResult): string => {
	const lines = [
		`### ${comparison.title}`,
		"",
		comparison.description ?? "",
		"",
		`${comparison.rounds} interleaved rounds in ${(comparison.elapsedMs / 1000).toFixed(1)} s${comparison.inner > 1 ? `; one sample = the mean of ${comparison.inner} invocations` : ""}.`,
		"",
	];
	// Contenders measured in processes of their own also report the collections their process ran.
	const gcs = comparison.contenders.some((contender) => contender.gcPer10k);
	lines.push(
		`| contender | median | p99 | × ${escapeCell(comparison.reference)} | per-round ratio (IQR) | samples |${gcs ? " scavenges / 10,000 invocations | full GCs / 10,000 invocations |" : ""} what it does |`,
		`| --- | ---: | ---: | ---: | ---: | ---: |${gcs ? " ---: | ---: |" : ""} --- |`,
	);
	for (const contender of comparison.contenders) {
		const name = isOurs(contender.name) ? `**${contender.name}**` : contender.name;
		const [low, high] = contender.ratioIqr;
		const gc = contender.gcPer10k;
		const gcCells = gcs ? ` ${gc ? gc.minor.toFixed(1) : "–"} | ${gc ? gc.major.toFixed(2) : "–"} |` : "";
		lines.push(
			`| ${escapeCell(name)} | ${formatMs(contender.stats.median)} | ${formatMs(contender.stats.p99)} | ${ratioText(contender.ratio)} | ${ratioText(low)}–${ratioText(high)} | ${contender.stats.count} |${gcCells} ${escapeCell(contender.note ?? "")} |`,
		);
	}
	return lines.join("\n");
};

const goalsTable = (goals: readonly GoalOutcome[]): string => {
	const lines = ["| comparison | goal | measured | per-round IQR | |", "| --- | --- | ---: | ---: | :---: |"];
	for (const goal of goals) {
		const mark = goal.met === undefined ? "–" : goal.met ? "✅" : "❌";
		const label = goal.informative ? `${goal.label} *(informative)*` : goal.label;
		lines.push(`| ${escapeCell(label)} | ${goal.goal} | ${goal.measured} | ${goal.spread} | ${mark} |`);
	}
	return lines.join("\n");
};

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

const memoryTable = (memory: MemoryResult): string => {
	const lines = [
		"### Memory: warm invocations in a child process, after a full GC",
		"",
		`Each variant runs in its own \`node --expose-gc\` process: a GET, one query and one background POST per invocation; the variants without middleware are the baselines. Readings after \`gc()\` at ${memory.variants[0]?.readings.map((reading) => reading.invocations.toLocaleString("en")).join(", ") ?? ""} invocations. Growth per invocation is taken from ${memory.early} to ${memory.total.toLocaleString("en")} (as the issue asks) and, as the slope of a least-squares fit from ${memory.warm.toLocaleString("en")} on, once warm (the goal's figure).`,
		"",
		`| variant | heap @${memory.early} | heap @${memory.total.toLocaleString("en")} | heap / invocation | warm slope | RSS @${memory.early} | RSS @${memory.total.toLocaleString("en")} | RSS / invocation | V8 reserved @${memory.total.toLocaleString("en")} |`,
		"| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
	];
	for (const variant of memory.variants) {
		const name = isOurs(variant.name) ? `**${variant.name}**` : variant.name;
		lines.push(
			`| ${name} | ${mib(variant.early.heapUsed)} | ${mib(variant.last.heapUsed)} | ${variant.heapPerInvocation.toFixed(1)} B | ${variant.heapSlopeWarm.toFixed(1)} B | ${mib(variant.early.rss)} | ${mib(variant.last.rss)} | ${variant.rssPerInvocation.toFixed(0)} B | ${mib(variant.last.heapTotal)} |`,
		);
	}
	for (const reason of memory.skipped) lines.push("", `Not measured: ${reason}`);
	return lines.join("\n");
};

/** 10^exp milliseconds as an axis label: 100 ns, 1 µs, 10 µs, ... 1 s. */
const tickLabel = (exp: number): string => {
	const units = ["ns", "µs", "ms", "s"];
	const nanoExp = exp + 6;
	const unit = Math.min(units.length - 1, Math.max(0, Math.floor(nanoExp / 3)));
	return `${10 ** (nanoExp - unit * 3)} ${units[unit]}`;
};

/** A horizontal bar chart of medians, one row per contender, grouped by comparison; log-scale x axis. */
export const renderChart = (comparisons: readonly ComparisonResult[], quick: boolean): string => {
	const rowHeight = 20;
	const headerHeight = 26;
	const labelWidth = 400;
	const plotWidth = 480;
	const valueWidth = 80;
	const width = labelWidth + plotWidth + valueWidth + 20;
	const medians = comparisons.flatMap((comparison) => comparison.contenders.map((c) => c.stats.median));
	const positive = medians.filter((value) => value > 0 && Number.isFinite(value));
	const minExp = Math.floor(Math.log10(Math.min(...positive, 1)));
	const maxExp = Math.ceil(Math.log10(Math.max(...positive, 1)));
	const x = (ms: number) =>
		labelWidth +
		((Math.log10(Math.max(ms, 10 ** minExp)) - minExp) / Math.max(1, maxExp - minExp)) * plotWidth;

	const parts: string[] = [];
	let y = 52;
	for (const comparison of comparisons) {
		parts.push(`<text x="10" y="${y + 17}" class="group">${escapeXml(comparison.title)}</text>`);
		y += headerHeight;
		for (const contender of comparison.contenders) {
			const ours = isOurs(contender.name);
			const reference = contender.name === comparison.reference;
			const fill = ours ? "#d9480f" : reference ? "#495057" : "#adb5bd";
			const end = x(contender.stats.median);
			parts.push(
				`<text x="${labelWidth - 8}" y="${y + 14}" text-anchor="end"${ours ? ' class="ours"' : ""}>${escapeXml(contender.name)}</text>`,
				`<rect x="${labelWidth}" y="${y + 3}" width="${Math.max(1, end - labelWidth).toFixed(1)}" height="${rowHeight - 6}" fill="${fill}"/>`,
				`<text x="${(end + 6).toFixed(1)}" y="${y + 14}">${escapeXml(formatMs(contender.stats.median))}</text>`,
			);
			y += rowHeight;
		}
		y += 6;
	}
	const axisY = y + 4;
	const ticks: string[] = [];
	for (let exp = minExp; exp <= maxExp; exp++) {
		const tx = x(10 ** exp);
		ticks.push(
			`<line x1="${tx.toFixed(1)}" y1="50" x2="${tx.toFixed(1)}" y2="${axisY}" class="grid"/>`,
			`<text x="${tx.toFixed(1)}" y="${axisY + 16}" text-anchor="middle" class="tick">${escapeXml(tickLabel(exp))}</text>`,
		);
	}
	const height = axisY + 30;
	const title = `Median time per invocation (log scale)${quick ? " — QUICK RUN, not representative" : ""}`;
	return [
		`<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="title" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12">`,
		`<title id="title">${escapeXml(title)}: middy-conn benchmarks</title>`,
		"<style>.group{font-weight:600;font-size:13px}.ours{font-weight:600;fill:#d9480f}.grid{stroke:#e9ecef}.tick{fill:#868e96;font-size:11px}</style>",
		`<rect width="${width}" height="${height}" fill="#fff"/>`,
		`<text x="10" y="22" font-size="15" font-weight="600">${escapeXml(title)}</text>`,
		...ticks,
		...parts,
		`<text x="10" y="40" class="tick">orange: middy-conn · dark: the comparison's reference · grey: others. Per-invocation medians; see the tables for p99 and ratios.</text>`,
		"</svg>",
		"",
	].join("\n");
};

export const renderMarkdown = (results: BenchResults, chartFile: string): string => {
	const { machine } = results;
	const comparisons = results.coldStart
		? [...results.comparisons, results.coldStart.comparison]
		: results.comparisons;
	const goals = evaluateGoals(comparisons, results.memory);
	const date = results.startedAt.slice(0, 10);
	const groupTitles: [string, string[]][] = [
		["HTTP", ["http-small", "http-large", "http-background"]],
		["DB", ["db-connect", "db-warm"]],
		["Overhead", ["overhead"]],
		["Cold start", ["cold-start"]],
	];
	const sections: string[] = [];
	for (const [title, ids] of groupTitles) {
		const tables = ids
			.map((id) => comparisons.find((comparison) => comparison.id === id))
			.filter((comparison) => comparison !== undefined)
			.map(comparisonTable);
		if (tables.length > 0) sections.push(`## ${title}\n\n${tables.join("\n\n")}`);
	}
	if (results.memory) sections.push(`## Memory\n\n${memoryTable(results.memory)}`);

	const analysis = existsSync(analysisFile) ? readFileSync(analysisFile, "utf8").trim() : "";
	return [
		"# Benchmarks",
		"",
		"<!-- Generated by `pnpm bench` (scripts/bench.ts). Do not edit by hand: edit scripts/bench/analysis.md or the generator, then run `pnpm bench`. -->",
		"",
		results.quick
			? "> **Quick run** (`pnpm bench --quick`): a few rounds per group to check that the harness works. The figures below are **not** representative.\n"
			: "",
		`What reuse buys and what the middlewares cost, measured side by side in **one run** on ${date}: within each comparison every contender runs in a process of its own and the processes take turns, round by round, so that drift hits them alike and each pays for the garbage it makes (the scavenges and full GCs columns count what each process collected); cold start and memory spawn a process per sample or variant. Figures are per invocation; ratios are medians divided by the reference's median in the same comparison. The per-round ratio (IQR) is the same ratio computed round by round, 25th to 75th percentile: how stable it is.`,
		"",
		`- Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB memory, ${machine.os}; load average ${machine.loadAverage.toFixed(2)} at the start`,
		`- Node ${machine.node} (V8 ${machine.v8}); undici ${machine.undici}, mysql2 ${machine.mysql2}, @middy/core ${machine.middy}${results.mysqlVersion ? `; MySQL server ${results.mysqlVersion} (throwaway, loopback)` : ""}`,
		"- HTTP peer: the test harness's HTTPS server (TLS 1.3, EC P-256 self-signed certificate), keep-alive, in its own process on loopback",
		`- Code: commit ${machine.commit}; run: \`pnpm bench${results.quick ? " --quick" : ""}\`, ${(results.elapsedMs / 1000).toFixed(0)} s in all`,
		...(machine.loadAverage > machine.cores * 0.75
			? [
					"- Other work was running on the machine (load average near or above the core count): absolute times and p99s are wider than on an idle machine; the interleaved ratios are what to read.",
				]
			: []),
		...results.missing.map((problem) => `- **Missing contenders**: ${problem}`),
		"",
		"## Goals",
		"",
		goalsTable(goals),
		"",
		`![Median time per invocation, per contender](${chartFile})`,
		"",
		...sections.flatMap((section) => [section, ""]),
		analysis ? `${analysis}\n` : "",
	]
		.join("\n")
		.replace(/\n{3,}/g, "\n\n");
};

/** Writes benchmarks.md and benchmarks.svg to `outDir`, and the raw results to .tmp/bench. Returns the paths. */
export const writeReport = (results: BenchResults, outDir: string): string[] => {
	const comparisons = results.coldStart
		? [...results.comparisons, results.coldStart.comparison]
		: results.comparisons;
	const markdown = `${outDir}/benchmarks.md`;
	const chart = `${outDir}/benchmarks.svg`;
	writeFileSync(chart, renderChart(comparisons, results.quick));
	writeFileSync(markdown, renderMarkdown(results, "benchmarks.svg"));
	const raw = `${root}.tmp/bench/results.json`;
	mkdirSync(`${root}.tmp/bench`, { recursive: true });
	writeFileSync(raw, `${JSON.stringify(results, null, "\t")}\n`);
	return [markdown, chart, raw.slice(root.length)];
};
