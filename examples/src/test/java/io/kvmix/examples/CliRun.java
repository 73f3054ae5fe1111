package io.kvmix.examples;

import com.fasterxml.jackson.databind.JsonNode;
import io.kvmix.examples.cli.JsonOutput;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.io.UncheckedIOException;

/** Runs the CLI in-process and keeps what it printed. */
record CliRun(int exitCode, String out, String err) {

    static CliRun of(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int code = KvmixCli.run(new PrintWriter(out, true), new PrintWriter(err, true), args);
        return new CliRun(code, out.toString(), err.toString());
    }

    JsonNode json() {
        try {
            return JsonOutput.MAPPER.readTree(out);
        } catch (IOException e) {
            throw new UncheckedIOException("stdout is not one JSON object: " + out, e);
        }
    }
}
