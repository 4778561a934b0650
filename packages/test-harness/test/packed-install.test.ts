// What a user gets from npm: each package packed as it will be published (`pnpm pack`, which builds it), the
// tarballs installed with plain npm into a new empty project beside @middy/core and mysql2, then imported from an
// ES module on Node 24 and type-checked from a TypeScript handler. Nothing here resolves the workspace.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
	MysqlAdmin,
	nodeBinary,
	type PublishedPackage,
	packPublishedPackages,
	publishedPackages,
	repositoryRoot,
	runCommand,
	type TestDatabase,
} from "../src/index.ts";

const root = repositoryRoot;
const published = publishedPackages;
const work = mkdtempSync(join(tmpdir(), "middy-conn-packed-"));
const tarballs = join(work, "tarballs");
const project = join(work, "project");

const rootManifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const versionOf = (name: string): string => rootManifest.devDependencies[name];

const run = (command: string, args: string[], cwd: string): string => runCommand(command, args, cwd);

let packed: Record<PublishedPackage, string>;
const tarballOf = (name: PublishedPackage) => packed[name];

let admin: MysqlAdmin;
let db: TestDatabase;

beforeAll(async () => {
	mkdirSync(tarballs);
	mkdirSync(project);
	// `pnpm pack` runs each package's prepack (a clean build) and rewrites `workspace:^` to real versions.
	packed = packPublishedPackages(tarballs);
	writeFileSync(
		join(project, "package.json"),
		JSON.stringify(
			{ name: "packed-install-check", version: "1.0.0", private: true, type: "module" },
			null,
			2,
		),
	);
	// Plain npm, as a user runs it (the one on PATH; on a fresh machine, the system Node's). The three tarballs go in
	// together, so that http-pool's and mysql's dependency on @middy-conn/lifecycle is the packed one.
	run(
		"npm",
		[
			"install",
			"--no-audit",
			"--no-fund",
			"--loglevel=error",
			...published.map(tarballOf),
			`@middy/core@${versionOf("@middy/core")}`,
			`mysql2@${versionOf("mysql2")}`,
			`@types/node@${versionOf("@types/node")}`,
		],
		project,
	);
	admin = await MysqlAdmin.connect();
	db = await admin.createDatabase("packed");
}, 300_000);

afterAll(async () => {
	if (db) await admin.dropDatabase(db);
	await admin?.close();
	rmSync(work, { recursive: true, force: true });
});

describe("packed install", () => {
	// publint: the manifest's exports, files and types agree with the tarball's contents. arethetypeswrong: the types
	// resolve for every module resolution an ESM-only package must serve (node16 from ESM, bundler).
	it.each(published)(
		"@middy-conn/%s's tarball passes publint (strict) and arethetypeswrong (ESM only)",
		(name) => {
			const bin = (tool: string) => join(root, "node_modules", ".bin", tool);
			run(bin("publint"), ["--strict", tarballOf(name)], work);
			run(bin("attw"), [tarballOf(name), "--profile", "esm-only"], work);
		},
	);

	it.each(published)("@middy-conn/%s's tarball holds only what a user needs", (name) => {
		const entries = execFileSync("tar", ["-tzf", tarballOf(name)], { encoding: "utf8" })
			.trim()
			.split("\n")
			.sort();
		for (const entry of entries) {
			expect(entry).toMatch(
				/^package\/(package\.json|README\.md|LICENSE|dist\/[\w./-]+\.(js|d\.ts|js\.map|d\.ts\.map)|src\/[\w./-]+\.ts)$/,
			);
			expect(entry).not.toMatch(/\.test(-d)?\.ts$/);
		}
		expect(entries).toEqual(
			expect.arrayContaining([
				"package/LICENSE",
				"package/README.md",
				"package/dist/index.d.ts",
				"package/dist/index.js",
				"package/package.json",
			]),
		);
		// Source and declaration maps ship, with the sources they point to: every map a file names is in the
		// tarball, and every source a map names is too (stack traces and "go to definition" reach real files).
		const installed = join(project, "node_modules", "@middy-conn", name);
		const shipped = new Set(entries.map((entry) => entry.slice("package/".length)));
		const outputs = entries.filter((file) => file.endsWith(".js") || file.endsWith(".d.ts"));
		expect(outputs.length).toBeGreaterThan(0);
		for (const entry of outputs) {
			const file = entry.slice("package/".length);
			const mapName = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(
				readFileSync(join(installed, file), "utf8"),
			)?.[1];
			expect(mapName, `${file} names its map`).toBeDefined();
			const mapFile = posix.join(posix.dirname(file), mapName as string);
			expect(shipped.has(mapFile), `${mapFile} is shipped`).toBe(true);
			const map = JSON.parse(readFileSync(join(installed, mapFile), "utf8")) as { sources: string[] };
			for (const source of map.sources) {
				const sourceFile = posix.join(posix.dirname(mapFile), source);
				expect(shipped.has(sourceFile), `${sourceFile} (a source of ${mapFile}) is shipped`).toBe(true);
			}
		}
	});

	it.each(published)("@middy-conn/%s's published manifest is complete and has no workspace links", (name) => {
		const manifest = JSON.parse(
			readFileSync(join(project, "node_modules", "@middy-conn", name, "package.json"), "utf8"),
		);
		expect(manifest).toMatchObject({
			name: `@middy-conn/${name}`,
			license: "MIT",
			type: "module",
			repository: { type: "git", url: expect.stringContaining("github.com"), directory: `packages/${name}` },
			// undici 8 crashes at import below 22.19 (and npm warns only when engines says so)
			engines: { node: ">=22.19" },
			keywords: expect.arrayContaining(["middy", "lambda"]),
		});
		expect(JSON.stringify(manifest)).not.toContain("workspace:");
		expect(readFileSync(join(project, "node_modules", "@middy-conn", name, "LICENSE"), "utf8")).toMatch(
			/MIT License/,
		);
	});

	// The floor is what `engines` says (undici 8 needs 22.19; Lambda runs nodejs22.x and nodejs24.x): both run it.
	const floorNode = (
		JSON.parse(readFileSync(join(root, "packages", "http-pool", "package.json"), "utf8")).engines
			.node as string
	)
		.replace(/^>=/, "")
		.replace(/^(\d+\.\d+)$/, "$1.0");
	it.each([
		["this run's Node", () => process.execPath],
		[`the floor, Node ${floorNode}`, () => nodeBinary(floorNode)],
	])(
		"imports in an ES module on %s, and a handler using both middlewares reaches a database and an HTTP server",
		(_label, node) => {
			writeFileSync(
				join(project, "check.mjs"),
				`import { createServer } from "node:http";
import middy from "@middy/core";
import { httpPool } from "@middy-conn/http-pool";
import { Invocation } from "@middy-conn/lifecycle";
import { mysqlConnection } from "@middy-conn/mysql";

if (typeof Invocation !== "function") throw new Error("@middy-conn/lifecycle has no Invocation");
const server = createServer((request, response) => response.end(JSON.stringify({ path: request.url })));
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));

const handler = middy()
	.use(httpPool({ origin: "http://127.0.0.1:" + server.address().port, logger: false }))
	.use(mysqlConnection({ config: JSON.parse(process.env.DB_CONFIG) }))
	.handler(async (event, context) => {
		const [rows] = await context.db.query("SELECT ? + 1 AS answer", [event.n]);
		const { body } = await context.http.request({ path: "/items", method: "GET" });
		return { answer: rows[0].answer, remote: await body.json() };
	});

const result = await handler({ n: 41 }, { awsRequestId: "r1", getRemainingTimeInMillis: () => 5000 });
server.close();
console.log(JSON.stringify({ ...result, node: process.versions.node }));
process.exit(0);
`,
			);
			const output = execFileSync(node(), ["check.mjs"], {
				cwd: project,
				encoding: "utf8",
				env: {
					...process.env,
					DB_CONFIG: JSON.stringify({
						host: db.host,
						port: db.port,
						user: db.user,
						password: db.password,
						database: db.database,
					}),
				},
			});
			expect(JSON.parse(output.trim().split("\n").pop() ?? "")).toEqual({
				answer: 42,
				remote: { path: "/items" },
				node: node() === process.execPath ? process.versions.node : floorNode,
			});
		},
		300_000,
	);

	it("type-checks a TypeScript handler against the published types, with context.db, context.http and context.waitUntil typed", () => {
		writeFileSync(
			join(project, "tsconfig.json"),
			JSON.stringify({
				compilerOptions: {
					target: "es2023",
					module: "nodenext",
					moduleResolution: "nodenext",
					strict: true,
					noEmit: true,
					skipLibCheck: true,
					types: ["node"],
				},
				files: ["handler.ts"],
			}),
		);
		writeFileSync(
			join(project, "handler.ts"),
			`import middy from "@middy/core";
import { httpPool } from "@middy-conn/http-pool";
import { mysqlConnection } from "@middy-conn/mysql";
import type { APIGatewayProxyEventV2, APIGatewayProxyResultV2 } from "aws-lambda";
import type { RowDataPacket } from "mysql2";

export const handler = middy<APIGatewayProxyEventV2, APIGatewayProxyResultV2>()
	.use(httpPool({ origin: "https://api.example.com", connections: 4, connect: { ca: "PEM" } }))
	.use(mysqlConnection({ config: { host: "db", user: "app", password: "secret", database: "shop" }, mode: "pool" }))
	.handler(async (event, context) => {
		const [rows] = await context.db.query<RowDataPacket[]>("SELECT * FROM orders WHERE id = ?", [event.pathParameters?.id]);
		const { statusCode, body } = await context.http.request({ path: "/v1/items", method: "GET" });
		const items: unknown = await body.json();
		context.waitUntil(
			context.http.request({ path: "/v1/audit", method: "POST", body: JSON.stringify(items) }).then((r) => r.body.dump()),
		);
		// @ts-expect-error context.db is typed, not any
		context.db.nothingLikeThis();
		// @ts-expect-error context.http is typed, not any
		context.http.nothingLikeThis();
		// @ts-expect-error context.db is not a number: the context is typed even though this project never installed
		// @types/aws-lambda itself (the packages bring it)
		const wrong: number = context.db;
		// @ts-expect-error waitUntil takes a promise or a function
		context.waitUntil("later");
		void wrong;
		return { statusCode, body: JSON.stringify(rows.map((row) => row.id)) };
	});

// @ts-expect-error an unknown option is a type error too, not only a TypeError at cold start
httpPool({ orign: "https://api.example.com" });
// @ts-expect-error mode is "scoped" or "pool"
mysqlConnection({ config: { host: "db" }, mode: "warm" });
`,
		);
		run(
			process.execPath,
			[join(root, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"],
			project,
		);
	});
});
