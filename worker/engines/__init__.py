"""Batching engines that schedule requests over a decoder: continuous, static, embedding."""
