package io.kvmix.cuda;

import io.kvmix.cuda.cache.DeviceBatchKvCache;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import java.util.zip.GZIPInputStream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

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
        List<String> modules = new ArrayList<>(List.of("quantize_pack", "fused_attention"));
        for (int headDim : DeviceBatchKvCache.HEAD_DIMS) {
            for (int group : DeviceBatchKvCache.QUERY_GROUPS) {
                for (int keyBits = 1; keyBits <= 4; keyBits++) {
                    for (int valueBits = 1; valueBits <= 4; valueBits++) {
                        modules.add(DeviceBatchKvCache.attentionModule(headDim, group, keyBits, valueBits));
                    }
                }
            }
        }
        for (String module : modules) {
            for (String arch : List.of("sm_80", "sm_90")) {
                String ptx = ptx(module, arch);
                assertTrue(ptx.contains(".target " + arch), module + " for " + arch + " targets " + arch);
                assertTrue(ptx.contains(".entry "), module + " for " + arch + " has a kernel");
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

    private static String ptx(String module, String arch) throws IOException {
        String name = CudaDevice.ptxResource(module, arch);
        try (InputStream in = CudaDevice.class.getResourceAsStream(name)) {
            assertNotNull(in, "missing resource io/kvmix/cuda/" + name + ": run kvmix-cuda/scripts/build-ptx.sh");
            return new String(new GZIPInputStream(in).readAllBytes(), StandardCharsets.UTF_8);
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
