"""The base layer: wire types, vocabulary, configuration, names; imports nothing above it."""
