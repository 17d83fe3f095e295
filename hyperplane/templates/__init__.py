"""CloudFormation and SAM templates as topologies: the template engine.

A template file becomes resolved resources in four steps, one module each:

    load         the file read within the topology file's bounds, with a YAML      reads the file
                 loader that turns CloudFormation's short-form tags (``!Ref``,
                 ``!GetAtt``, ``!Sub``...) into their long form; JSON alike
    sam          ``Transform: AWS::Serverless-2016-10-31``: samtranslator, run      runs a library
                 offline, makes the CloudFormation template (local ``CodeUri``
                 kept under ``Metadata.HyperplaneCodeUri``)
    stack        parameters, mappings, conditions, the dependency graph, physical   pure
                 ids and attributes: ``resolve(...) -> Stack`` of ``Resource`` records in
                 dependency order (with ``parameters``, ``physical``, ``graph``)
    intrinsics   ``Ref``, ``Fn::GetAtt``, ``Fn::Sub``... evaluated in a context     pure
                 (with ``functions``: the value functions, ``Fn::Cidr`` and kin)

``lint`` runs cfn-lint's Python API on a file (errors as ``TopologyError``, warnings
as lines).  ``mapping``, ``placing`` and ``rules`` turn a resolved ``Stack`` into the
emulator's topology document (placing answers ``stack.resolve``'s ``attributes``
callback).  Every error of the engine is one ``TopologyError(file, path, reason)``
whose path names the place in the template (``Resources.Db.Properties.Port``,
``Parameters.Env``, ``Conditions.IsProd``).
"""
