// The soak's report: the injected faults against their outcomes, the invariants as figures, and the last line.
import { FAULTS } from "./directive.ts";
import type { Ledger, Row, RowCounts } from "./invariants.ts";

const ROW_LABELS: Record<Row, string> = {
	none: "no fault (ordinary traffic)",
	probe: "probes (state, memory)",
	...FAULTS,
	"db-restart": "the DB server restarts, every environment frozen (first invocations after)",
	"db-restart-live":
		"the DB server restarts while invocations run (those it overlapped, and the first after)",
};

const COLUMNS: Array<[string, (counts: RowCounts) => number]> = [
	["invocations", (c) => c.invocations],
	["succeeded", (c) => c.succeeded],
	["4xx", (c) => c.answered4xx],
	["clear error", (c) => c.clearError],
	["delivered", (c) => c.delivered],
	["reported failed", (c) => c.reportedFailed],
	["leaks", (c) => c.leak],
	["lost", (c) => c.lost],
	["dup", (c) => c.duplicated],
	["unexpected", (c) => c.unexpected],
	["running > 1 s", (c) => c.running],
];

/** The table of faults against outcomes, as lines (Markdown, so that docs/reliability.md can hold it as is). */
export const faultTable = (ledger: Ledger): string[] => {
	const order: Row[] = ["none", ...(Object.keys(FAULTS) as Row[]), "probe"];
	const rows = order.filter((row) => ledger.rows.has(row));
	const labelWidth = Math.max(...rows.map((row) => ROW_LABELS[row].length), "fault".length);
	const widths = COLUMNS.map(([name]) => Math.max(name.length, 5));
	const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
	const out = [
		line(["fault".padEnd(labelWidth), ...COLUMNS.map(([name], i) => name.padStart(widths[i] as number))]),
		line(["-".repeat(labelWidth), ...widths.map((width) => `${"-".repeat(width - 1)}:`)]),
	];
	for (const row of rows) {
		const counts = ledger.rows.get(row) as RowCounts;
		out.push(
			line([
				ROW_LABELS[row].padEnd(labelWidth),
				...COLUMNS.map(([, value], i) => String(value(counts)).padStart(widths[i] as number)),
			]),
		);
	}
	return out;
};

/** The last line, exactly as the issue asks for it. */
export const lastLine = (ledger: Ledger): string =>
	`${ledger.invocations} invocations, ${ledger.faults} faults, ${ledger.count("leak")} leaks, ${ledger.count("lost")} lost, ${ledger.count("duplicated")} duplicated`;

/**
 * Every violation, grouped by kind, row and function: how many, and the first one's message (the run prints only
 * the first violations as they happen).
 */
export const violationGroups = (ledger: Ledger): string[] => {
	const groups = new Map<string, { count: number; first: string }>();
	for (const violation of ledger.violations) {
		const key = `${violation.kind} · ${ROW_LABELS[violation.row]} · ${violation.fn}`;
		const group = groups.get(key);
		if (group) group.count++;
		else groups.set(key, { count: 1, first: violation.message });
	}
	return [...groups].map(([key, { count, first }]) => `${count} × ${key}: first: ${first}`);
};
