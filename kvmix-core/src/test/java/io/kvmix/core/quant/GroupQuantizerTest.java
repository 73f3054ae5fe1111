package io.kvmix.core.quant;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class GroupQuantizerTest {

    /** Every width x both axes x group sizes x head dims (including one that is not a multiple of 32). */
    static Stream<Arguments> shapes() {
        List<Arguments> all = new ArrayList<>();
        for (BitWidth bits : BitWidth.values()) {
            for (boolean keys : new boolean[]{true, false}) {
                for (int g : new int[]{32, 64, 128}) {
                    for (int d : new int[]{64, 128, 80}) {
                        if (!keys && d % Math.min(g, d) != 0) {
                            continue; // a value group must divide the head
                        }
                        all.add(Arguments.of(bits, keys, g, d));
                    }
                }
            }
        }
        return all.stream();
    }

    /** fp16 tile [G tokens][D channels] as the cache stores a chunk of one head. */
    static MemorySegment randomTile(Arena arena, int tokens, int d, Random random, float spread) {
        MemorySegment tile = arena.allocate(2L * tokens * d);
        for (int i = 0; i < tokens * d; i++) {
            float x = (float) (random.nextGaussian() * spread + (random.nextInt(4) == 0 ? random.nextGaussian() * 5 : 0));
            Fp16.set(tile, 2L * i, x);
        }
        return tile;
    }

    static PackedLayout layout(BitWidth bits, boolean keys, int g, int d) {
        return keys ? PackedLayout.keys(bits, g, d) : PackedLayout.values(bits, g, d);
    }

    static byte[] quantize(GroupQuantizer quantizer, MemorySegment tile, boolean keys, PackedLayout layout, int d,
                           Arena arena) {
        MemorySegment out = arena.allocate(layout.bytes() + 8);
        out.fill((byte) 0x5a);
        int laneStride = keys ? d : 1;
        int packStride = keys ? 1 : d;
        quantizer.quantize(tile, 0, laneStride, packStride, layout, out, 4, MatrixOrigin.keys(0, 0, 0));
        assertEquals((byte) 0x5a, out.get(java.lang.foreign.ValueLayout.JAVA_BYTE, 0), "wrote before its offset");
        assertEquals((byte) 0x5a, out.get(java.lang.foreign.ValueLayout.JAVA_BYTE, layout.bytes() + 4),
                "wrote past its matrix");
        return out.asSlice(4, layout.bytes()).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
    }

    @ParameterizedTest(name = "{0} keys={1} G={2} D={3}")
    @MethodSource("shapes")
    void vectorIsBitIdenticalToScalar(BitWidth bits, boolean keys, int g, int d) {
        try (Arena arena = Arena.ofConfined()) {
            for (int seed = 0; seed < 12; seed++) {
                Random random = new Random(seed * 7919L + bits.bits() * 31 + g + d);
                float spread = new float[]{1e-3f, 0.5f, 3f, 300f}[seed % 4];
                MemorySegment tile = randomTile(arena, g, d, random, spread);
                PackedLayout layout = layout(bits, keys, g, d);
                byte[] scalar = quantize(ScalarGroupQuantizer.INSTANCE, tile, keys, layout, d, arena);
                byte[] vector = quantize(VectorGroupQuantizer.INSTANCE, tile, keys, layout, d, arena);
                assertArrayEquals(scalar, vector, "seed " + seed);
            }
        }
    }

    @ParameterizedTest(name = "{0} keys={1} G={2} D={3}")
    @MethodSource("shapes")
    void decodeErrorIsAtMostHalfAStep(BitWidth bits, boolean keys, int g, int d) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment tile = randomTile(arena, g, d, new Random(42), 1f);
            PackedLayout layout = layout(bits, keys, g, d);
            MemorySegment packed = arena.allocate(layout.bytes());
            VectorGroupQuantizer.INSTANCE.quantize(tile, 0, keys ? d : 1, keys ? 1 : d, layout, packed, 0,
                    MatrixOrigin.keys(0, 0, 0));
            for (int t = 0; t < g; t++) {
                for (int c = 0; c < d; c++) {
                    float x = Fp16.get(tile, 2L * (t * d + c));
                    int lane = keys ? t : c;
                    int pack = keys ? c : t;
                    float scale = Fp16.get(packed, layout.scaleOffset(pack, lane / layout.groupLength()));
                    float decoded = ScalarGroupQuantizer.dequantize(packed, 0, layout, lane, pack);
                    // fp16 rounding of the scale can stretch the grid by up to 2^-11 per step
                    float bound = scale * (0.5f + bits.maxCode() * 0x1p-10f) + 1e-6f;
                    assertTrue(Math.abs(decoded - x) <= bound,
                            "t=" + t + " c=" + c + " x=" + x + " decoded=" + decoded + " bound=" + bound);
                }
            }
        }
    }

    @Test
    void constantGroupsDecodeExactly() {
        try (Arena arena = Arena.ofConfined()) {
            int g = 32;
            int d = 64;
            MemorySegment tile = arena.allocate(2L * g * d);
            for (int t = 0; t < g; t++) {
                for (int c = 0; c < d; c++) {
                    Fp16.set(tile, 2L * (t * d + c), c * 0.37f - 5f); // constant along tokens (a key group)
                }
            }
            for (BitWidth bits : BitWidth.values()) {
                PackedLayout layout = PackedLayout.keys(bits, g, d);
                MemorySegment packed = arena.allocate(layout.bytes());
                VectorGroupQuantizer.INSTANCE.quantize(tile, 0, d, 1, layout, packed, 0, MatrixOrigin.keys(0, 0, 0));
                for (int t = 0; t < g; t++) {
                    for (int c = 0; c < d; c++) {
                        assertEquals(Fp16.round(c * 0.37f - 5f), ScalarGroupQuantizer.dequantize(packed, 0, layout, t, c));
                        assertEquals(0, ScalarGroupQuantizer.getCode(packed, 0, layout, t, c));
                    }
                }
            }
        }
    }

    @Test
    void extremeGroupsAgreeAndStayFinite() {
        float[][] groups = {
                {65504f, -65504f},           // widest finite range: scale 131008/15 fits fp16 at 4 bits
                {6e-8f, 1.2e-7f, 0f},        // subnormal fp16 inputs
                {1f, 1.0009765625f},         // range one ulp: scale underflows to a subnormal
                {0f, 0f, -0f},               // signed zeros
                {1e-5f, -1e-5f, 3e-6f},      // tiny range, subnormal scale
        };
        try (Arena arena = Arena.ofConfined()) {
            for (float[] values : groups) {
                for (BitWidth bits : new BitWidth[]{BitWidth.TWO, BitWidth.THREE, BitWidth.FOUR}) {
                    int g = 32;
                    int d = 32;
                    MemorySegment tile = arena.allocate(2L * g * d);
                    for (int i = 0; i < g * d; i++) {
                        Fp16.set(tile, 2L * i, values[i % values.length]);
                    }
                    for (boolean keys : new boolean[]{true, false}) {
                        PackedLayout layout = layout(bits, keys, g, d);
                        byte[] scalar = quantize(ScalarGroupQuantizer.INSTANCE, tile, keys, layout, d, arena);
                        byte[] vector = quantize(VectorGroupQuantizer.INSTANCE, tile, keys, layout, d, arena);
                        assertArrayEquals(scalar, vector);
                        MemorySegment packed = MemorySegment.ofArray(scalar);
                        for (int lane = 0; lane < layout.laneLength(); lane++) {
                            for (int pack = 0; pack < layout.packLength(); pack++) {
                                assertTrue(Float.isFinite(ScalarGroupQuantizer.dequantize(packed, 0, layout, lane, pack)));
                            }
                        }
                    }
                }
            }
        }
    }

    @Test
    void oneBitScaleOverflowIsAnErrorNamingThePosition() {
        try (Arena arena = Arena.ofConfined()) {
            int g = 32;
            int d = 32;
            MemorySegment tile = arena.allocate(2L * g * d);
            Fp16.set(tile, 2L * (5 * d + 7), 60000f);  // token 5, channel 7
            Fp16.set(tile, 2L * (9 * d + 7), -60000f); // token 9, channel 7: range 120000 > 65504 at 1 bit
            PackedLayout layout = PackedLayout.keys(BitWidth.ONE, g, d);
            MemorySegment packed = arena.allocate(layout.bytes());
            for (GroupQuantizer quantizer : List.of(ScalarGroupQuantizer.INSTANCE, VectorGroupQuantizer.INSTANCE)) {
                QuantizationException e = assertThrows(QuantizationException.class, () -> quantizer.quantize(tile, 0, d, 1,
                        layout, packed, 0, MatrixOrigin.keys(3, 2, 64)));
                assertTrue(e.getMessage().startsWith("layer 3 keys, kv-head 2, tokens 64..95, channel 7: group range"),
                        e.getMessage());
            }
        }
    }

    @Test
    void nonFiniteInputIsNamedIdenticallyByBothQuantizers() {
        try (Arena arena = Arena.ofConfined()) {
            int g = 32;
            int d = 64;
            for (short bad : new short[]{(short) 0x7c00, (short) 0xfc00, (short) 0x7e00}) {
                MemorySegment tile = arena.allocate(2L * g * d);
                tile.set(Fp16.LAYOUT, 2L * (17 * d + 40), bad); // token 17, channel 40
                for (boolean keys : new boolean[]{true, false}) {
                    PackedLayout layout = layout(BitWidth.TWO, keys, g, d);
                    MemorySegment packed = arena.allocate(layout.bytes());
                    MatrixOrigin origin = keys ? MatrixOrigin.keys(1, 0, 32) : MatrixOrigin.values(1, 0, 32);
                    String expected = (keys ? "layer 1 keys" : "layer 1 values") + ", kv-head 0, token 49, channel 40: non-finite value";
                    for (GroupQuantizer quantizer : List.of(ScalarGroupQuantizer.INSTANCE, VectorGroupQuantizer.INSTANCE)) {
                        QuantizationException e = assertThrows(QuantizationException.class, () -> quantizer.quantize(tile, 0,
                                keys ? d : 1, keys ? 1 : d, layout, packed, 0, origin));
                        assertTrue(e.getMessage().startsWith(expected), e.getMessage());
                    }
                }
            }
        }
    }

    /**
     * An independent reader written from FORMAT.md alone (as a Python reader would be): checks word
     * positions, bit positions and the 3-bit planes against the quantizer's output.
     */
    @ParameterizedTest(name = "{0}")
    @org.junit.jupiter.params.provider.EnumSource(BitWidth.class)
    void bytesFollowFormatMd(BitWidth bits) {
        int g = 32;
        int d = 64;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment tile = randomTile(arena, g, d, new Random(bits.bits()), 1f);
            PackedLayout layout = PackedLayout.keys(bits, g, d);
            byte[] bytes = quantize(ScalarGroupQuantizer.INSTANCE, tile, true, layout, d, arena);
            java.nio.ByteBuffer buf = java.nio.ByteBuffer.wrap(bytes).order(java.nio.ByteOrder.LITTLE_ENDIAN);
            int b = bits.bits();
            int runs = d / 32;
            int codeBytes = 4 * runs * b * g;
            assertEquals(codeBytes + 4 * d, bytes.length);
            for (int t = 0; t < g; t++) {
                for (int c = 0; c < d; c++) {
                    int run = c / 32;
                    int i = c % 32;
                    int code;
                    if (b == 3) {
                        int low = buf.getInt(4 * ((run * 3 + i / 16) * g + t)) >>> (2 * (i % 16)) & 3;
                        int high = buf.getInt(4 * ((run * 3 + 2) * g + t)) >>> i & 1;
                        code = low | high << 2;
                    } else {
                        int perWord = 32 / b;
                        code = buf.getInt(4 * ((run * b + i / perWord) * g + t)) >>> (b * (i % perWord)) & ((1 << b) - 1);
                    }
                    float scale = Float.float16ToFloat(buf.getShort(codeBytes + 2 * c));
                    float min = Float.float16ToFloat(buf.getShort(codeBytes + 2 * d + 2 * c));
                    float x = Fp16.get(tile, 2L * (t * d + c));
                    int expected = scale == 0 ? 0 : Math.max(0, Math.min(bits.maxCode(),
                            (int) Math.floor((x - min) / scale + 0.5f)));
                    assertEquals(expected, code, "t=" + t + " c=" + c);
                }
            }
        }
    }
}
