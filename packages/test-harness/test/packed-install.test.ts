// What a user gets from npm: each package packed as it will be published (`pnpm pack`, which builds it), the
// tarballs installed with plain npm into new empty projects, then run and type-checked there:
// - the latest: beside the latest @middy/core and mysql2, run from an ES module on Node 24 (the one ./run fetches),
//   and type-checked with strict TypeScript: a handler in the READMEs' form, and the repository's own type tests
//   (packages/*/test/types.test-d.ts, test/types/*.test-d.ts) with their imports pointed at the packages;
// - the floor: beside the lowest @middy/core, mysql2 and undici the packages accept, run on the lowest Node
//   `engines` accepts.
// Neither project adds @types/aws-lambda itself. Nothing here resolves the workspace.
import { execFileSync } from "node:child_process";
import {
	existsSync,
	mkdirSync,
	mkdtempSync,
	readdirSync,
	readFileSync,
	rmSync,
	writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, posix, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rangeFloor } from "../../../test/drivers.ts";
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
/** The latest versions of the peers, as a user starting today gets them. */
const project = join(work, "project");
/** The lowest versions of the peers and of undici that the packages accept. */
const floorProject = join(work, "floor-project");

const manifestOf = (...path: string[]) =>
	JSON.parse(readFileSync(join(root, ...path, "package.json"), "utf8"));
const rootManifest = manifestOf();
const versionOf = (name: string): string => rootManifest.devDependencies[name];
const mysqlManifest = manifestOf("packages", "mysql");
const httpPoolManifest = manifestOf("packages", "http-pool");
/** The floors, read from the packages' own ranges so that this test cannot drift from them. */
const floors = {
	"@middy/core": rangeFloor(mysqlManifest.peerDependencies["@middy/core"]),
	mysql2: rangeFloor(mysqlManifest.peerDependencies.mysql2),
	undici: rangeFloor(httpPoolManifest.dependencies.undici),
};
/** The Node 24 that ./run fetches (a fixed version: "on 24" must not mean "whatever runs this test"). */
const node24 = /^node_version="(24\.\d+\.\d+)"$/m.exec(readFileSync(join(root, "run"), "utf8"))?.[1];
/** The floor is what `engines` says (undici 8 needs 22.19; Lambda runs nodejs22.x and nodejs24.x). */
const floorNode = (httpPoolManifest.engines.node as string)
	.replace(/^>=/, "")
	.replace(/^(\d+\.\d+)$/, "$1.0");

const run = (command: string, args: string[], cwd: string): string => runCommand(command, args, cwd);

let packed: Record<PublishedPackage, string>;
const tarballOf = (name: PublishedPackage) => packed[name];

let admin: MysqlAdmin;
let db: TestDatabase;

/** A new project with the tarballs (installed together, so that lifecycle is the packed one) and `extra`. */
const installProject = (dir: string, extra: string[], manifest: Record<string, unknown> = {}): void => {
	mkdirSync(dir);
	writeFileSync(
		join(dir, "package.json"),
		JSON.stringify(
			{ name: "packed-install-check", version: "1.0.0", private: true, type: "module", ...manifest },
			null,
			2,
		),
	);
	// Plain npm, as a user runs it (the one on PATH; on a fresh machine, the system Node's).
	run(
		"npm",
		["install", "--no-audit", "--no-fund", "--loglevel=error", ...published.map(tarballOf), ...extra],
		dir,
	);
};

beforeAll(async () => {
	mkdirSync(tarballs);
	// `pnpm pack` runs each package's prepack (a clean build) and rewrites `workspace:^` to real versions.
	packed = packPublishedPackages(tarballs);
	installProject(project, [
		`@middy/core@${versionOf("@middy/core")}`,
		`mysql2@${versionOf("mysql2")}`,
		`@types/node@${versionOf("@types/node")}`,
		// What the type tests import besides the packages: the router of the READMEs' idiom, undici's own
		// functions (which take context.http as their dispatcher), and vitest's expectTypeOf (its own package).
		`@middy/http-router@${versionOf("@middy/http-router")}`,
		`undici@${versionOf("undici")}`,
		`expect-type@${JSON.parse(readFileSync(join(root, "node_modules", "vitest", "package.json"), "utf8")).dependencies["expect-type"]}`,
	]);
	// undici is the packages' dependency, not the user's: npm's overrides pin it for the whole tree.
	installProject(floorProject, [`@middy/core@${floors["@middy/core"]}`, `mysql2@${floors.mysql2}`], {
		overrides: { undici: floors.undici },
	});
	admin = await MysqlAdmin.connect();
	db = await admin.createDatabase("packed");
}, 600_000);

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
				/^package\/(package\.json|README\.md|CHANGELOG\.md|LICENSE|dist\/[\w./-]+\.(js|d\.ts|js\.map|d\.ts\.map)|src\/[\w./-]+\.ts)$/,
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

	it("pins the Node versions it runs on: 24 as ./run fetches it, and the floor `engines` declares", () => {
		expect(node24).toMatch(/^24\./);
		expect(floorNode).toBe("22.19.0");
	});

	it.each([
		{
			label: `Node ${node24}, with the latest @middy/core, mysql2 and undici`,
			node: () => nodeBinary(node24 as string),
			dir: project,
			versions: {
				node: node24,
				core: expect.any(String),
				mysql2: expect.any(String),
				undici: expect.any(String),
			},
		},
		{
			label: `the floor: Node ${floorNode}, @middy/core ${floors["@middy/core"]}, mysql2 ${floors.mysql2}, undici ${floors.undici}`,
			node: () => nodeBinary(floorNode),
			dir: floorProject,
			versions: {
				node: floorNode,
				core: floors["@middy/core"],
				mysql2: floors.mysql2,
				undici: floors.undici,
			},
		},
	])(
		"imports in an ES module on $label, and a handler using both middlewares reaches a database and an HTTP server",
		({ node, dir, versions }) => {
			writeFileSync(
				join(dir, "check.mjs"),
				`import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
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
// The copies Node resolves (node_modules lookup, as Node does it): undici from http-pool's own folder, wherever npm
// put it.
const versionOf = (name, from) => {
	for (let dir = from; ; dir = dirname(dir)) {
		try {
			return JSON.parse(readFileSync(join(dir, "node_modules", name, "package.json"), "utf8")).version;
		} catch (error) {
			if (dir === dirname(dir)) throw error;
		}
	}
};
const versions = {
	node: process.versions.node,
	core: versionOf("@middy/core", process.cwd()),
	mysql2: versionOf("mysql2", process.cwd()),
	undici: versionOf("undici", join(process.cwd(), "node_modules", "@middy-conn", "http-pool")),
};
console.log(JSON.stringify({ ...result, versions }));
process.exit(0);
`,
			);
			const output = execFileSync(node(), ["check.mjs"], {
				cwd: dir,
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
				versions,
			});
		},
		300_000,
	);

	it("type-checks a TypeScript handler and the repository's type tests against the published types, with context.db, context.http and context.waitUntil typed and their misuse an error", () => {
		// The consumer adds no @types/aws-lambda: what the public types need comes with the packages.
		const consumer = JSON.parse(readFileSync(join(project, "package.json"), "utf8"));
		expect(Object.keys(consumer.dependencies)).not.toContain("@types/aws-lambda");
		// The repository's type tests, as a user's code: imports of a package's source become its name, vitest's
		// expectTypeOf is expect-type's (the package vitest re-exports). Their @ts-expect-error lines must fail here
		// too (an unused one fails the check): misuse of context.db, context.http, context.waitUntil, contextKey
		// ("partner", "billing"), a chain missing its middleware, @middy/http-router's routes.
		const typeTests = [
			...published
				.filter((name) => existsSync(join(root, "packages", name, "test", "types.test-d.ts")))
				.map((name) => ({
					source: join(root, "packages", name, "test", "types.test-d.ts"),
					target: `types/${name}.test-d.ts`,
					name,
				})),
			...readdirSync(join(root, "test", "types"))
				.filter((file) => file.endsWith(".test-d.ts"))
				.map((file) => ({
					source: join(root, "test", "types", file),
					target: `types/${file}`,
					name: undefined,
				})),
		];
		mkdirSync(join(project, "types"), { recursive: true });
		for (const { source, target, name } of typeTests) {
			let text = readFileSync(source, "utf8").replaceAll('from "vitest"', 'from "expect-type"');
			if (name) text = text.replaceAll('from "../src/index.ts"', `from "@middy-conn/${name}"`);
			expect(text, `${relative(root, source)} imports only packages`).not.toMatch(/from "\.{1,2}\//);
			expect(text).not.toContain('"vitest"');
			writeFileSync(join(project, target), text);
		}
		const copied = typeTests.map(({ target }) => readFileSync(join(project, target), "utf8")).join("\n");
		for (const subject of [
			'contextKey: "partner"',
			'contextKey: "billing"',
			'from "@middy/http-router"',
			"const notANumber: number = context.db",
			"const wrong: number = context.partner",
		]) {
			expect(copied, `the type tests cover ${subject}`).toContain(subject);
		}

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
				files: ["handler.ts", ...typeTests.map(({ target }) => target)],
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
