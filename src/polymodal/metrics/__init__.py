"""Pure scoring functions: captions (COCO caption evaluation), VQA accuracy, retrieval,
classification and regression metrics. They take arrays (numpy, lists; retrieval also torch
tensors, on any device) and return plain numbers; nothing here runs a model or imports the
layers above.
"""
