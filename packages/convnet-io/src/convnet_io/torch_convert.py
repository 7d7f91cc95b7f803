"""placeholder"""


def to_torch_state_dict(*a, **k):
    raise NotImplementedError


def from_torch_state_dict(*a, **k):
    raise NotImplementedError
