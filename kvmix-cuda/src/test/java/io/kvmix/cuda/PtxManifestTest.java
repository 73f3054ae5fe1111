package io.kvmix.cuda;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;

/**
 * The committed PTX must come from the committed CUDA sources: scripts/build-ptx.sh records the SHA-256 of
 * every .cu/.cuh it compiled in ptx/sources.sha256. Needs no GPU and no nvcc.
 */
class PtxManifestTest {
    private static final Path CUDA_SOURCES = Path.of("src/main/cuda");
    private static final String PTX = "/io/kvmix/cuda/ptx/";

    @Test
    void recordedHashesMatchTheCudaSources() throws IOException {
        Map<String, String> actual = new TreeMap<>();
        try (Stream<Path> files = Files.list(CUDA_SOURCES)) {
            for (Path file : files.filter(f -> f.toString().endsWith(".cu") || f.toString().endsWith(".cuh")).toList()) {
                actual.put(file.getFileName().toString(), sha256(Files.readAllBytes(file)));
            }
        }
        Map<String, String> recorded = new TreeMap<>();
        for (String line : resource("sources.sha256").lines().toList()) {
            String[] parts = line.trim().split("\\s+");
            recorded.put(parts[1], parts[0]);
        }
        assertEquals(recorded, actual, "the PTX is stale: run kvmix-cuda/scripts/build-ptx.sh and commit its output");
    }

    @Test
    void everyModuleHasPtxForBothTargets() throws IOException {
        List<String> modules;
        try (Stream<Path> files = Files.list(CUDA_SOURCES)) {
            modules = files.map(f -> f.getFileName().toString()).filter(n -> n.endsWith(".cu"))
                    .map(n -> n.substring(0, n.length() - 3)).sorted().collect(Collectors.toList());
        }
        for (String module : modules) {
            for (String arch : List.of("sm_80", "sm_90")) {
                String ptx = resource(module + "." + arch + ".ptx");
                assertEquals(true, ptx.contains(".target " + arch), module + "." + arch + ".ptx targets " + arch);
            }
        }
    }

    @Test
    void ptxTargetFollowsComputeCapability() {
        assertEquals("sm_80", CudaDevice.ptxArch(8));
        assertEquals("sm_90", CudaDevice.ptxArch(9));
        assertEquals("sm_90", CudaDevice.ptxArch(10));
    }

    private static String resource(String name) throws IOException {
        try (InputStream in = PtxManifestTest.class.getResourceAsStream(PTX + name)) {
            assertNotNull(in, "missing resource " + PTX + name + ": run kvmix-cuda/scripts/build-ptx.sh");
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        }
    }

    private static String sha256(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
