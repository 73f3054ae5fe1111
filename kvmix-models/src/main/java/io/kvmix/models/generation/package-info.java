/** Autoregressive generation: greedy and temperature/top-p sampling, EOS and min/max new tokens, streaming. */
package io.kvmix.models.generation;
