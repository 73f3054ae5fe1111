package io.kvmix.models.readme;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Checks that README.md shows a test's example code verbatim (indentation and blank lines aside): the
 * code between {@code // README-<MARKER>-BEGIN} and {@code // README-<MARKER>-END} in the test's source.
 */
public final class ReadmeSnippets {
    private static final Path README = Path.of("../README.md");

    private ReadmeSnippets() {
    }

    /** @param testSource the test's source file, relative to its module */
    public static void assertReadmeShows(Path testSource, String marker) throws IOException {
        String test = Files.readString(testSource);
        Matcher inTest = Pattern.compile("// README-" + marker + "-BEGIN\\R(.*?)\\R\\s*// README-" + marker + "-END",
                Pattern.DOTALL).matcher(test);
        assertTrue(inTest.find(), testSource + " has no README-" + marker + " markers");
        assertTrue(normalize(Files.readString(README)).contains(normalize(inTest.group(1))),
                "README.md must contain the example of " + testSource.getFileName() + " verbatim (indentation aside)");
    }

    private static String normalize(String code) {
        return code.lines().map(String::strip).filter(line -> !line.isEmpty()).reduce("", (a, b) -> a + b + "\n");
    }
}
