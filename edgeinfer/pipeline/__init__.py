"""The preprocessing pipeline: decoding, the op table, exact resampling, the graph's input contract.

Below the tasks and the model: it turns a raw image into the tensor the graph receives and knows each
geometric op's inverse, and nothing here knows which task a model performs.
"""
