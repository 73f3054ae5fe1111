package io.kvmix.examples.bench;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kvmix.examples.cli.JsonOutput;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Writes a Llama model directory with random fp16 weights (config.json + model.safetensors) for speed
 * measurements of shapes no bundled checkpoint has. Random weights are fine for speed, never for accuracy.
 * The file is streamed: a 1 MiB block of random small values (std 0.02) is written repeatedly.
 */
final class RandomModel {
    private RandomModel() {
    }

    /** TinyLlama-1.1B's shape: 22 layers, hidden 2048, 32 heads, 4 KV heads, MLP 5632, vocabulary 32000. */
    static Path oneBillion(Path dir) {
        return write(dir, 22, 2048, 32, 4, 5632, 32000);
    }

    /** Writes the model into {@code dir} unless a complete one is already there. */
    static Path write(Path dir, int layers, int hidden, int heads, int kvHeads, int intermediate, int vocab) {
        Path done = dir.resolve(".complete");
        if (Files.exists(done)) {
            return dir;
        }
        try {
            Files.createDirectories(dir);
            int headDim = hidden / heads;
            Map<String, long[]> tensors = new LinkedHashMap<>();   // name -> shape
            tensors.put("model.embed_tokens.weight", new long[]{vocab, hidden});
            for (int l = 0; l < layers; l++) {
                String p = "model.layers." + l + ".";
                tensors.put(p + "input_layernorm.weight", new long[]{hidden});
                tensors.put(p + "self_attn.q_proj.weight", new long[]{(long) heads * headDim, hidden});
                tensors.put(p + "self_attn.k_proj.weight", new long[]{(long) kvHeads * headDim, hidden});
                tensors.put(p + "self_attn.v_proj.weight", new long[]{(long) kvHeads * headDim, hidden});
                tensors.put(p + "self_attn.o_proj.weight", new long[]{hidden, (long) heads * headDim});
                tensors.put(p + "post_attention_layernorm.weight", new long[]{hidden});
                tensors.put(p + "mlp.gate_proj.weight", new long[]{intermediate, hidden});
                tensors.put(p + "mlp.up_proj.weight", new long[]{intermediate, hidden});
                tensors.put(p + "mlp.down_proj.weight", new long[]{hidden, intermediate});
            }
            tensors.put("model.norm.weight", new long[]{hidden});
            tensors.put("lm_head.weight", new long[]{vocab, hidden});

            ObjectNode header = JsonOutput.object();
            long offset = 0;
            for (Map.Entry<String, long[]> t : tensors.entrySet()) {
                long bytes = 2;
                ObjectNode entry = header.putObject(t.getKey());
                entry.put("dtype", "F16");
                ArrayNode shape = entry.putArray("shape");
                for (long d : t.getValue()) {
                    shape.add(d);
                    bytes *= d;
                }
                entry.putArray("data_offsets").add(offset).add(offset + bytes);
                offset += bytes;
            }
            StringBuilder json = new StringBuilder(header.toString());
            while ((8 + json.length()) % 8 != 0) {
                json.append(' ');
            }
            try (FileChannel out = FileChannel.open(dir.resolve("model.safetensors"), StandardOpenOption.CREATE,
                    StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
                byte[] headerBytes = json.toString().getBytes(StandardCharsets.US_ASCII);
                out.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(headerBytes.length).flip());
                out.write(ByteBuffer.wrap(headerBytes));
                ByteBuffer block = randomBlock(1 << 20);
                for (Map.Entry<String, long[]> t : tensors.entrySet()) {
                    long bytes = 2;
                    for (long d : t.getValue()) {
                        bytes *= d;
                    }
                    boolean norm = t.getValue().length == 1;
                    while (bytes > 0) {
                        int n = (int) Math.min(bytes, block.capacity());
                        ByteBuffer chunk = norm ? ones(n) : block.duplicate().limit(n);
                        while (chunk.hasRemaining()) {
                            out.write(chunk);
                        }
                        bytes -= n;
                    }
                }
            }
            ObjectNode config = JsonOutput.object()
                    .put("model_type", "llama").put("hidden_size", hidden).put("intermediate_size", intermediate)
                    .put("num_hidden_layers", layers).put("num_attention_heads", heads)
                    .put("num_key_value_heads", kvHeads).put("vocab_size", vocab)
                    .put("max_position_embeddings", 2048).put("rms_norm_eps", 1e-5).put("rope_theta", 10000.0)
                    .put("torch_dtype", "float16").put("bos_token_id", 1).put("eos_token_id", 2);
            Files.writeString(dir.resolve("config.json"), config.toString());
            Files.writeString(done, "");
            return dir;
        } catch (IOException e) {
            throw new UncheckedIOException(dir + ": " + e.getMessage(), e);
        }
    }

    private static ByteBuffer randomBlock(int bytes) {
        SplittableRandom random = new SplittableRandom(7);
        ByteBuffer block = ByteBuffer.allocate(bytes).order(ByteOrder.LITTLE_ENDIAN);
        while (block.hasRemaining()) {
            block.putShort(Float.floatToFloat16((float) (random.nextGaussian() * 0.02)));
        }
        return block.flip();
    }

    private static ByteBuffer ones(int bytes) {
        ByteBuffer buffer = ByteBuffer.allocate(bytes).order(ByteOrder.LITTLE_ENDIAN);
        while (buffer.hasRemaining()) {
            buffer.putShort(Float.floatToFloat16(1f));
        }
        return buffer.flip();
    }
}
