/**
 * What the executable's copy of @platformatic/kafka exports from its schema registries: nothing
 * (`scripts/compile.ts` points the library index's import of `./registries/index.js` here, and
 * only that import).
 *
 * The index re-exports the Confluent schema registry client, and loading that loads avsc, the
 * Avro library, with all of its code. messagebuffer uses neither. The library's clients import
 * what they need of the registries (`registries/abstract.js`) themselves, and keep it. Without
 * the client and avsc, the idle executable holds about 1.5 MiB less (docs/benchmarks.md). If
 * messagebuffer ever imports a registry's name from the library, the build fails: this module
 * exports none.
 *
 * @module
 */

export {};
