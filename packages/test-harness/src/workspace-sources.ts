// Where a workspace package's source is. In this repository `@middy-conn/<name>` resolves to the package's built
// `dist`, which a test run may not have built (and must not depend on): tests, bundled functions, child processes
// and worker threads all map `@middy-conn/<name>` to packages/<name>/src/index.ts instead, and a subpath export
// `@middy-conn/<name>/<entry>` (lifecycle/internal) to packages/<name>/src/<entry>.ts. tsconfig.json and
// vitest.config.ts hold the same mapping.

const packagesDir = new URL("../../", import.meta.url);

/** The file URL of the source behind `specifier`, or undefined when it is not a workspace package. */
export const workspaceSourceUrl = (specifier: string): URL | undefined => {
	const match = /^@middy-conn\/(lifecycle|http-pool|mysql|test-harness)(?:\/([a-z-]+))?$/.exec(specifier);
	if (!match) return undefined;
	return new URL(`${match[1]}/src/${match[2] ?? "index"}.ts`, packagesDir);
};
