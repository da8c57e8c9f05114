import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { FlagError, parseFlags } from "../../src/agent/flags.ts";

const spec = { "file-max-time": "value", tls: "boolean", socket: "value" } as const;

describe("command-line flags", () => {
  it("takes values after a space or an equals sign, and booleans alone", () => {
    const p = parseFlags(["--file-max-time", "5", "--tls", "--socket=/s=1"], spec);
    assert.deepEqual(p.values, { "file-max-time": "5", tls: true, socket: "/s=1" });
    assert.deepEqual(p.positionals, []);
  });

  it("hands a value that starts with a dash to the setting, whatever it looks like", () => {
    assert.equal(parseFlags(["--file-max-time", "-1"], spec).values["file-max-time"], "-1");
    assert.equal(parseFlags(["--file-max-time=-0.5"], spec).values["file-max-time"], "-0.5");
    assert.equal(parseFlags(["--socket", "--tls"], spec).values.socket, "--tls");
  });

  it("keeps the last of a repeated flag, and takes what follows -- as positionals", () => {
    const p = parseFlags(["--socket", "a", "--socket", "b", "x", "--", "--tls", "-"], spec, true);
    assert.equal(p.values.socket, "b");
    assert.deepEqual(p.positionals, ["x", "--tls", "-"]);
  });

  const bad: Array<[string[], RegExp]> = [
    [["--nope"], /^unknown flag --nope$/],
    [["--nope=1"], /^unknown flag --nope$/],
    [["-x"], /^unknown flag -x$/],
    [["--constructor"], /^unknown flag --constructor$/],
    [["--file-max-time"], /^--file-max-time needs a value$/],
    [["--tls=true"], /^--tls takes no value$/],
    [["stray"], /^unexpected argument "stray"$/],
  ];
  for (const [args, message] of bad) {
    it(`refuses ${args.join(" ")} naming the flag`, () => {
      assert.throws(
        () => parseFlags(args, spec),
        (e) => e instanceof FlagError && message.test(e.message),
      );
    });
  }
});
