package io.kvmix.core.quant;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static org.junit.jupiter.api.Assertions.assertEquals;

class Fp16VectorsTest {

    /** Every finite fp16 bit pattern (normals, subnormals, both zeros, both signs) converts exactly. */
    @Test
    void loadIsExactForEveryFiniteHalf() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment all = arena.allocate(2L * 65536);
            for (int bits = 0; bits < 65536; bits++) {
                all.set(Fp16.LAYOUT, 2L * bits, (short) bits);
            }
            float[] lanes = new float[Fp16Vectors.LANES];
            for (int first = 0; first < 65536; first += Fp16Vectors.LANES) {
                Fp16Vectors.load(all, 2L * first).intoArray(lanes, 0);
                for (int i = 0; i < lanes.length; i++) {
                    int bits = first + i;
                    if ((bits & 0x7c00) == 0x7c00) {
                        continue; // inf/NaN are rejected before they reach the cache
                    }
                    float expected = Float.float16ToFloat((short) bits);
                    assertEquals(Float.floatToRawIntBits(expected), Float.floatToRawIntBits(lanes[i]),
                            "fp16 bits 0x" + Integer.toHexString(bits));
                }
            }
        }
    }
}
